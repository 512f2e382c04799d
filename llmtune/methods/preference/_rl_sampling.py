"""How the online RL trainers sample completions, in one place, so that `llmtune eval` on an RL
run samples exactly as training did.

trl 1.16's GRPOTrainer and RLOOTrainer (their non-vLLM path, `__init__`) build one
GenerationConfig from their config: max_new_tokens = max_completion_length, do_sample,
temperature, top_p, top_k (trl's default 0: no top-k, where transformers' own default is
50), min_p, repetition_penalty, cache_implementation, the tokenizer's pad/bos ids, every eos
id the model declares plus the tokenizer's, then `generation_kwargs` over all of it; and they
pass it whole to generate(). The settings are read from the same trl config the trainer is
built from (`trainer_args`), never restated here; tests/test_rl_sampling.py compares the
result with a real trainer's `generation_config` for both algorithms.
"""

from __future__ import annotations

from pathlib import Path


def trainer_args(method, recipe, workdir: Path):
    """The trl config (GRPOConfig or RLOOConfig) a run's trainer is built from."""
    from llmtune.methods.preference._trainer import training_args

    config_cls, options = method.trl_config(recipe)
    return training_args(config_cls, recipe, workdir, has_eval=True, **options)


def eos_token_ids(policy, tok) -> list[int]:
    """Every eos id the model declares, with the tokenizer's first unless already there."""
    ids = policy.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return ids if tok.eos_token_id in ids else [tok.eos_token_id, *ids]


def generation_config(args, policy, tok):
    """The GenerationConfig the trainer samples completions with."""
    from transformers import GenerationConfig

    kwargs = {
        "max_new_tokens": args.max_completion_length, "do_sample": True, "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id, "eos_token_id": eos_token_ids(policy, tok),
        "temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k, "min_p": args.min_p,
        "repetition_penalty": args.repetition_penalty, "cache_implementation": args.cache_implementation,
    }
    kwargs.update(args.generation_kwargs or {})
    return GenerationConfig(**kwargs, disable_compile=True)
