"""Finetuning methods, one module each, grouped by family (the folders):

- weights/: train the model's own weights: all of them (full) or a chosen part (frozen-head)
- peft_backed/: what peft implements (lora with DoRA/rsLoRA, ia3)
- prompts/: learned inputs: soft prompts in front of the embeddings, prefixes in every attention
- adapters/: new bottleneck modules inside every block
- features/: the frozen model as a feature extractor (linear probe)
- preference/: reward models, online RL and the direct preference family, through trl

The registry (registry.py) discovers them; see base.py for what a method is.
"""
