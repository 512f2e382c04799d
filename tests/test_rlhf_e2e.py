"""RLHF end to end: preference pairs -> reward model run -> online RL run that reads it."""

from __future__ import annotations

import json
import random

import pytest

E_WORDS = ["tree", "bee", "free", "green", "seen", "sleep", "three", "eel", "deep", "keep", "see", "here"]
PLAIN_WORDS = ["an", "oak", "ran", "on", "a", "road", "sun", "dog", "cat", "fog", "hill", "corn"]


def write_data(tmp_path):
    """Human feedback stand-in: replies made of e-words are preferred to plain ones."""
    rng = random.Random(0)
    pairs = [{"prompt": f"Say something about item {i}:",
              "chosen": " " + " ".join(rng.choice(E_WORDS) for _ in range(4)),
              "rejected": " " + " ".join(rng.choice(PLAIN_WORDS) for _ in range(4))} for i in range(48)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    # Prompts only (the preference columns of the same file are ignored by the prompts task).
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in pairs[:32]))


@pytest.mark.slow
def test_reward_model_then_rl_against_it(cli, write_recipe, tmp_path, monkeypatch):
    write_data(tmp_path)
    reward = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "preference", "train": "pairs.jsonl", "eval_fraction": 0.25, "max_length": 48},
        "method": {"name": "reward"},
        "train": {"max_steps": 12, "batch_size": 8, "lr": 1e-3, "log_every": 4}}, "reward.yaml")
    res = cli("train", reward, "-o", tmp_path / "reward-run", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["eval"]["accuracy"] >= 0.9

    rl = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "prompts", "train": "prompts.jsonl", "eval_fraction": 0, "max_length": 48},
        # A relative run directory resolves against the recipe's folder; beta > 0 makes GRPO
        # build a reference model, which for a model built from a config it cannot load by name.
        "method": {"name": "rl", "algorithm": "grpo", "reward_model": "reward-run", "num_generations": 4,
                   "max_completion_length": 8, "beta": 0.05},
        "train": {"max_steps": 16, "batch_size": 16, "lr": 2e-2, "scheduler": "constant", "log_every": 4},
        "eval": {"batch_size": 16}}, "rl.yaml")
    run = tmp_path / "rl-run"
    res = cli("train", rl, "-o", run, "--json")
    assert res.code == 0, res.err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in records if "reward" in r]
    assert "rewards/reward_model/mean" in records[0] and len(rewards) == 4
    assert rewards[-1] > rewards[0] + 0.3, rewards
    assert max(r["kl"] for r in records if "kl" in r) > 0  # the reference model took part
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["reward"] == {"model": str((tmp_path / "reward-run").resolve())}

    # Evaluated from elsewhere: the run finds its reward model through the manifest.
    monkeypatch.chdir(tmp_path.parent)
    trained = cli("eval", run, "--json", "--limit", "8")
    base = cli("eval", rl, "--json", "--limit", "8")
    assert trained.code == 0 and base.code == 0, trained.err + base.err
    assert json.loads(trained.out)["mean_reward"] > json.loads(base.out)["mean_reward"]
