"""Stages chain: `model.name` may name a finished run of a mergeable method that writes text;
the next stage starts from its base with what it trained merged in (made once, cached),
records it in the manifest as the parent run, and renders online RL's text prompts the way
the parent rendered its prompts. A run that cannot merge is refused before anything loads."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA

SFT = {"model": {"name": "tiny-llama"},
       "data": {"task": "sft", "train": str(DATA / "alpaca_tiny.json"), "eval_fraction": 0.1, "max_length": 96},
       "train": {"max_steps": 3, "batch_size": 8, "lr": 3e-3, "log_every": 1},
       "eval": {"generate": False}}


def train(cli, write_recipe, tmp_path, recipe: dict, name: str):
    run = tmp_path / name
    res = cli("train", write_recipe(recipe, f"{name}.yaml"), "-o", run, "--overwrite", "--json")
    assert res.code == 0, res.err
    return run


@pytest.fixture
def sft_run(cli, write_recipe, tmp_path):
    return train(cli, write_recipe, tmp_path, {**SFT, "method": {"name": "lora", "r": 4,
                                                                  "target_modules": "all-linear"}}, "sft")


def test_a_run_as_the_model_is_its_base_with_the_training_merged_in(cli, write_recipe, tmp_path, sft_run):
    import torch

    from llmtune.models.load import load_body
    from llmtune.runs.open import open_run

    target = open_run(sft_run)
    merged_by_method = target.method.merge(target.trained_model().body).eval()
    from_name = load_body(str(sft_run), "sft").eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        want, got = merged_by_method(input_ids=ids).logits, from_name(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)
    base = load_body("tiny-llama", "sft").eval()
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, got, atol=1e-3)  # the training is in it

    # The next stage trains on it and records where it came from.
    child = train(cli, write_recipe, tmp_path, {**SFT, "model": {"name": str(sft_run)},
                                                 "method": {"name": "lora", "r": 4}}, "child")
    manifest = json.loads((child / "manifest.json").read_text())
    parent = manifest["parent_run"]
    assert parent["run"] == str(sft_run) and parent["method"] == "lora" and parent["base_model"] == "tiny-llama"
    assert manifest["model"] == str(sft_run)
    assert cli("eval", child, "--json").code == 0  # the child's base is found again from its record


def test_retraining_the_parent_makes_a_new_merged_folder(cli, write_recipe, tmp_path, sft_run):
    from llmtune.methods.parent_merge import merged_folder

    first = merged_folder(sft_run)
    assert merged_folder(sft_run) == first  # cached
    train(cli, write_recipe, tmp_path, {**SFT, "method": {"name": "lora", "r": 4, "target_modules": "all-linear"},
                                        "train": {**SFT["train"], "seed": 1}}, "sft")  # same folder, retrained
    assert merged_folder(sft_run) != first


def test_a_run_that_cannot_merge_is_refused_saying_what_works(cli, write_recipe, tmp_path):
    prefix = train(cli, write_recipe, tmp_path, {**SFT, "method": {"name": "prefix", "num_virtual_tokens": 2}},
                   "prefix")
    recipe = write_recipe({**SFT, "model": {"name": str(prefix)}, "method": {"name": "lora"}}, "next.yaml")
    for verb in ("validate", "train"):
        res = cli(verb, recipe)
        assert res.code == 2, res.err
        assert "cannot be merged" in res.err and "what works" in res.err and "lora" in res.err, res.err
        assert "Traceback" not in res.err


def test_rl_text_prompts_follow_the_parent_runs_rendering(cli, write_recipe, tmp_path, sft_run):
    from llmtune.methods.parent_run import recipe_prompt_format
    from llmtune.recipe.load import recipe_from_dict

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {w}."}) + "\n" for w in ("yes", "no", "hi", "ok")))
    rl = {"model": {"name": str(sft_run)},
          "data": {"task": "prompts", "train": str(prompts), "eval": str(prompts), "max_length": 64},
          "method": {"name": "rl", "algorithm": "grpo", "num_generations": 2, "max_completion_length": 4,
                     "reward_function": "llmtune.methods.preference.rewards:char_fraction",
                     "reward_kwargs": {"char": "e"}},
          "train": {"max_steps": 1, "batch_size": 4, "log_every": 1}, "eval": {"batch_size": 4}}
    assert recipe_prompt_format(recipe_from_dict(rl, base_dir=tmp_path).recipe) == ("chat", None)  # the SFT ran through chat
    plain = {**SFT, "data": {**SFT["data"], "prompt_style": "plain"}, "method": {"name": "lora", "r": 4}}
    plain_run = train(cli, write_recipe, tmp_path, plain, "plain")
    style, template = recipe_prompt_format(recipe_from_dict({**rl, "model": {"name": str(plain_run)}}, base_dir=tmp_path).recipe)
    assert style == "plain" and "### Instruction" in template

    run = train(cli, write_recipe, tmp_path, rl, "rl")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["prompt_format"] == {"style": "chat", "template": None}
    sample = json.loads(cli("eval", run, "--json").out)["samples"][0]
    assert sample["prompt"] == [{"role": "user", "content": "Say yes."}]  # rendered by the chat template
