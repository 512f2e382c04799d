"""Reward models: a tiny Llama learns to score chosen above rejected, and what it saves
loads with plain transformers / peft."""

from __future__ import annotations

import json
import random

import pytest

SUBJECTS = ["film", "book", "meal", "song", "trip", "game", "show", "class", "park", "hotel", "play", "phone"]


def write_pairs(path, n: int = 48, seed: int = 0):
    """Easy synthetic preferences: chosen replies praise, rejected ones complain."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        s = rng.choice(SUBJECTS)
        rows.append({"prompt": f"How was the {s}?", "chosen": f" The {s} was good, really good.",
                     "rejected": f" The {s} was bad, really bad."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reward_recipe(tmp_path, **method):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    return {"model": {"name": "tiny-llama"},
            # eval on the training pairs themselves: the test asks whether it learnt them
            "data": {"task": "preference", "train": str(pairs), "eval": str(pairs), "max_length": 64},
            "method": {"name": "reward", **method},
            "train": {"max_steps": 12, "batch_size": 8, "lr": 1e-3, "log_every": 4}}


@pytest.mark.slow
def test_reward_model_learns_its_pairs_and_loads_with_transformers(cli, write_recipe, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    recipe = write_recipe(reward_recipe(tmp_path))
    run = tmp_path / "run"
    res = cli("train", recipe, "-o", run, "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["steps"] == 12 and result["eval"]["accuracy"] >= 0.9, result["eval"]
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses[-1] < losses[0]

    base = cli("eval", recipe, "--json")
    trained = cli("eval", run, "--json")
    assert base.code == 0 and trained.code == 0, base.err + trained.err
    base, trained = json.loads(base.out), json.loads(trained.out)
    assert trained["accuracy"] >= 0.9 and trained["rows"] == 48
    assert trained["margin"] > base["margin"] + 1.0, (base, trained)
    assert json.loads((run / "eval.json").read_text())["accuracy"] == trained["accuracy"]

    # final/ is a plain transformers sequence classifier with one score.
    tok = AutoTokenizer.from_pretrained(run / "final")
    model = AutoModelForSequenceClassification.from_pretrained(run / "final").eval()
    assert model.config.num_labels == 1
    texts = ["How was the film? The film was good, really good.</s>", "How was the film? The film was bad, really bad.</s>"]
    with torch.no_grad():
        scores = model(**tok(texts, return_tensors="pt", padding=True)).logits[:, 0]
    assert scores[0] > scores[1]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method"] == "reward" and manifest["trainer"] == "RewardTrainer" and manifest["steps"] == 12


@pytest.mark.slow
def test_reward_model_with_lora_saves_adapter_and_score_head(cli, write_recipe, tmp_path):
    from peft import PeftModel

    from llmtune.methods.preference._models import load_reward_base
    from llmtune.models.load import load_tokenizer
    from llmtune.recipe.load import load_recipe

    raw = reward_recipe(tmp_path, peft={"r": 8, "target_modules": "all-linear"})
    raw["train"].update({"max_steps": 8, "lr": 5e-3})
    recipe = write_recipe(raw)
    run = tmp_path / "run"
    res = cli("train", recipe, "-o", run, "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["trainable_parameters"] < result["total_parameters"] / 2
    assert result["eval"]["accuracy"] >= 0.8, result["eval"]
    assert (run / "final" / "adapter_config.json").exists() and not (run / "final" / "config.json").exists()
    # Plain peft on the same base reproduces the trained scores (the score head is saved too).
    tok = load_tokenizer("tiny-llama")
    model = PeftModel.from_pretrained(load_reward_base(load_recipe(recipe).recipe.model, tok), str(run / "final"))
    assert any("score" in n for n, _ in model.named_parameters() if "modules_to_save" in n)
    assert json.loads(cli("eval", run, "--json").out)["accuracy"] == result["eval"]["accuracy"]


def test_reward_recipe_refuses_prompt_only_data(cli, write_recipe, tmp_path):
    raw = reward_recipe(tmp_path)
    raw["data"]["task"] = "prompts"
    res = cli("validate", write_recipe(raw))
    assert res.code == 2 and "does not train task 'prompts'" in res.err


def test_peft_options_are_checked(cli, write_recipe, tmp_path):
    raw = reward_recipe(tmp_path, peft={"r": 8, "alpah": 16})
    res = cli("validate", write_recipe(raw))
    assert res.code == 2 and "method.peft.alpah" in res.err and "alpha" in res.err
