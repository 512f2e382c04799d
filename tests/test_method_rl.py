"""Online RL (GRPO/RLOO) with a rule-based reward: the mean reward rises over the steps,
and reward mistakes (a bad `module:function`, a batch the generations do not divide) are
exit-2 errors."""

from __future__ import annotations

import json

import pytest

REWARD_MODULE = '''
def e_share(completions, **kw):
    """Share of the completion's characters that are the letter e."""
    return [c.count("e") / len(c) if c else 0.0 for c in completions]
'''


def write_prompts(path, n: int = 32):
    path.write_text("".join(json.dumps({"prompt": f"Say something about item {i}:", "item": i}) + "\n"
                            for i in range(n)))
    return path


def rl_recipe(tmp_path, **method) -> dict:
    (tmp_path / "my_rewards.py").write_text(REWARD_MODULE)
    return {"model": {"name": "tiny-llama"},
            "data": {"task": "prompts", "train": str(write_prompts(tmp_path / "prompts.jsonl")), "eval_fraction": 0,
                     "max_length": 48},
            "method": {"name": "rl", "reward_function": "my_rewards.py:e_share", "num_generations": 4,
                       "max_completion_length": 8, **method},
            "train": {"max_steps": 16, "batch_size": 16, "lr": 2e-2, "scheduler": "constant", "log_every": 4},
            "eval": {"batch_size": 16}}


def rewards(run) -> list[float]:
    return [r["reward"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "reward" in r]


@pytest.mark.slow
def test_grpo_raises_a_rule_based_reward(cli, write_recipe, tmp_path):
    recipe = write_recipe(rl_recipe(tmp_path))
    run = tmp_path / "run"
    res = cli("train", recipe, "-o", run, "--json")
    assert res.code == 0, res.err
    seen = rewards(run)
    assert len(seen) == 4
    assert seen[-1] > seen[0] + 0.1, seen
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["reward"]["function"] == f"{tmp_path / 'my_rewards.py'}:e_share"
    assert manifest["trainer"] == "GRPOTrainer"
    # `llmtune eval` samples with the trained policy and scores with the same reward.
    trained = cli("eval", run, "--json", "--limit", "8")
    assert trained.code == 0, trained.err
    out = json.loads(trained.out)
    assert out["mean_reward"] > seen[0]
    # Three samples show what the mean is made of: each a prompt, its completion and that completion's reward.
    assert len(out["samples"]) == 3
    for x in out["samples"]:
        text = x["completion"]
        assert x["reward"] == pytest.approx(text.count("e") / len(text) if text else 0.0)


@pytest.mark.slow
def test_rloo_with_lora_and_a_builtin_reward(cli, write_recipe, tmp_path):
    raw = rl_recipe(tmp_path, algorithm="rloo", reward_function="llmtune.methods.preference.rewards:char_fraction",
                    reward_kwargs={"char": "e"}, peft={"r": 8, "target_modules": "all-linear"}, beta=0.05)
    raw["train"].update({"max_steps": 2, "batch_size": 8, "log_every": 1})
    run = tmp_path / "run"
    res = cli("train", write_recipe(raw), "-o", run, "--json")
    assert res.code == 0, res.err
    assert (run / "final" / "adapter_config.json").exists()
    assert len(rewards(run)) == 2 and json.loads(res.out)["trainable_parameters"] < 100_000


def test_reward_function_form_is_validated(cli, write_recipe, tmp_path):
    res = cli("validate", write_recipe(rl_recipe(tmp_path, reward_function="not a function")))
    assert res.code == 2 and "module:function" in res.err
    raw = rl_recipe(tmp_path)
    raw["method"]["reward_model"] = "runs/reward"
    res = cli("validate", write_recipe(raw))
    assert res.code == 2 and "exactly one of" in res.err


def test_unimportable_reward_function_is_exit_2(cli, write_recipe, tmp_path):
    raw = rl_recipe(tmp_path, reward_function="no_such_module_here:score")
    res = cli("train", write_recipe(raw), "-o", tmp_path / "run")
    assert res.code == 2, res.err
    assert "could not import 'no_such_module_here'" in res.err and "Traceback" not in res.err
    raw = rl_recipe(tmp_path, reward_function="my_rewards.py:missing")
    res = cli("train", write_recipe(raw), "-o", tmp_path / "run2")
    assert res.code == 2 and "has no function 'missing'" in res.err and "e_share" in res.err


def test_generations_must_divide_the_batch(cli, write_recipe, tmp_path):
    raw = rl_recipe(tmp_path, num_generations=3)
    res = cli("train", write_recipe(raw), "-o", tmp_path / "run")
    assert res.code == 2
    assert "num_generations 3 must divide train.batch_size x train.grad_accum (16 x 1 = 16)" in res.err


def test_reward_model_must_be_a_reward_run(cli, write_recipe, tmp_path):
    fake = tmp_path / "not-reward" / "final"
    fake.mkdir(parents=True)
    (fake / "llmtune.json").write_text(json.dumps({"method": "dpo", "model_kind": "policy"}))
    raw = rl_recipe(tmp_path)
    del raw["method"]["reward_function"]
    raw["method"]["reward_model"] = "not-reward"
    res = cli("train", write_recipe(raw), "-o", tmp_path / "run")
    assert res.code == 2 and "not a reward model" in res.err
    raw["method"]["reward_model"] = "missing-run"
    res = cli("train", write_recipe(raw), "-o", tmp_path / "run2")
    assert res.code == 2 and "no finished run there" in res.err


SIGNALLING_REWARD = '''
import os, signal
from pathlib import Path

def e_share(completions, **kw):
    marker = Path(__file__).with_name("signalled")
    calls = Path(__file__).with_name("calls")
    calls.write_text(str(int(calls.read_text() or 0) + 1) if calls.exists() else "1")
    if calls.read_text() == "2" and not marker.exists():
        marker.write_text("")
        os.kill(os.getpid(), signal.SIGTERM)  # as if the job were stopped during step 2
    return [c.count("e") / len(c) if c else 0.0 for c in completions]
'''


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_finishes(cli, write_recipe, tmp_path):
    raw = rl_recipe(tmp_path)
    (tmp_path / "my_rewards.py").write_text(SIGNALLING_REWARD)
    raw["train"].update({"max_steps": 4, "batch_size": 8, "log_every": 1})
    recipe = write_recipe(raw)
    run = tmp_path / "run"
    res = cli("train", recipe, "-o", run)
    assert res.code == 128 + 15, res.err
    assert "SIGTERM: stopped at step 2" in res.err and "--resume" in res.err
    assert (run / "checkpoints" / "checkpoint-2").is_dir() and not (run / "final").exists()
    res = cli("train", recipe, "-o", run, "--resume", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["steps"] == 4
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "reward" in r]
    assert steps == [1, 2, 3, 4]
