"""`llmtune eval` on an RL run samples completions exactly as the trainer did (issue 9):
transformers' generate() defaults to top_k=50 where trl's GRPO/RLOO use no top-k (top_k=0),
so the evaluation used to score a different distribution from the one trained on."""

from __future__ import annotations

import pytest
import torch
from test_method_rl import rl_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _set_up(tmp_path, algorithm: str):
    from llmtune.methods.preference._rl_sampling import trainer_args
    from llmtune.methods.registry import method_for
    from llmtune.models.load import load_tokenizer
    from llmtune.recipe.load import recipe_from_dict

    raw = rl_recipe(tmp_path, algorithm=algorithm, temperature=0.7, top_p=0.95)
    recipe = recipe_from_dict(raw, base_dir=tmp_path).recipe
    method = method_for(recipe.method)
    tok = load_tokenizer("tiny-llama")
    policy = method.load_model(recipe, tok)
    return recipe, method, tok, policy, trainer_args(method, recipe, tmp_path / "work")


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_eval_samples_with_the_trainers_generation_config(algorithm, tmp_path):
    from datasets import Dataset
    from trl import GRPOTrainer, RLOOTrainer

    from llmtune.methods.preference._rl_eval import sample
    from llmtune.methods.preference._rl_sampling import generation_config

    recipe, method, tok, policy, args = _set_up(tmp_path, algorithm)
    trainer_cls = GRPOTrainer if algorithm == "grpo" else RLOOTrainer
    trainer = trainer_cls(model=policy, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                          args=args, train_dataset=Dataset.from_list([{"prompt": "x"}] * 8), processing_class=tok)
    ours = generation_config(args, policy, tok)
    assert ours.to_dict() == trainer.generation_config.to_dict()
    assert (ours.top_k, ours.temperature, ours.top_p, ours.max_new_tokens) == (0, 0.7, 0.95, 8)

    # What sample() draws equals what generate() draws with the trainer's own config on
    # prompts repeated as trl's sampler repeats them, left-padded as trl pads them.
    prompts = ["Say something about item 1:", "Say something about item 22:"]
    drawn = sample(policy.eval(), tok, prompts, ours, num_generations=4, batch_size=2, seed=3)
    tok.padding_side = "left"
    enc = tok([p for p in prompts for _ in range(4)], return_tensors="pt", padding=True)
    torch.manual_seed(3)
    with torch.inference_mode():
        out = policy.generate(**enc, generation_config=trainer.generation_config)
    assert drawn == tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
