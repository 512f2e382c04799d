"""The direct preference family (DPO, KTO, ORPO) on a tiny Llama built from a config: the
preference margin grows, the reference model never has to be reloaded by name, and
checkpoints, resume and final/ behave as for every method."""

from __future__ import annotations

import json
import random
import sys

import pytest

SUBJECTS = ["film", "book", "meal", "song", "trip", "game", "show", "class", "park", "hotel", "play", "phone"]


def write_pairs(path, n: int = 40, seed: int = 0):
    """Easy synthetic preferences: chosen replies praise, rejected ones complain."""
    rng = random.Random(seed)
    rows = [{"prompt": f"How was the {s}?", "chosen": f" The {s} was good.", "rejected": f" The {s} was bad."}
            for s in (rng.choice(SUBJECTS) for _ in range(n))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(tmp_path, method: dict, **train) -> dict:
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    return {"model": {"name": "tiny-llama"},
            "data": {"task": "preference", "train": str(pairs), "eval_fraction": 0.2, "max_length": 48},
            "method": method,
            "train": {"max_steps": 8, "batch_size": 8, "lr": 1e-3, "log_every": 2, **train}}


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_dpo_margin_grows_and_final_loads_with_transformers(cli, write_recipe, tmp_path):
    from transformers import AutoModelForCausalLM

    path = write_recipe(recipe(tmp_path, {"name": "dpo", "beta": 0.1}))
    run = tmp_path / "run"
    res = cli("train", path, "-o", run, "--json")
    assert res.code == 0, res.err
    train = [r for r in metrics(run) if "rewards/margins" in r]
    assert train[0]["step"] == 2 and train[-1]["step"] == 8
    assert train[-1]["rewards/margins"] > train[0]["rewards/margins"] > 0
    assert json.loads(res.out)["eval"]["rewards/accuracies"] >= 0.9

    # The policy against the reference (the base model) on held-out pairs.
    base, trained = json.loads(cli("eval", path, "--json").out), json.loads(cli("eval", run, "--json").out)
    assert base["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    assert trained["rewards/margins"] > 0.5 and trained["rewards/accuracies"] >= 0.9
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    assert model.config.model_type == "llama"
    assert not (run / "final" / "training_args.bin").exists()


@pytest.mark.slow
def test_dpo_with_lora_uses_the_frozen_base_as_reference(cli, write_recipe, tmp_path):
    from peft import PeftModel

    from llmtune.models.builtin import build_tiny

    raw = recipe(tmp_path, {"name": "dpo", "peft": {"r": 8, "target_modules": ["q_proj", "v_proj", "up_proj"]}},
                 lr=5e-3, max_steps=6)
    run = tmp_path / "run"
    res = cli("train", write_recipe(raw), "-o", run, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["trainable_parameters"] < out["total_parameters"] / 5
    assert out["eval"]["rewards/margins"] > 0
    model = PeftModel.from_pretrained(build_tiny("tiny-llama", "preference"), str(run / "final"))
    assert model.peft_config["default"].r == 8


@pytest.mark.slow
def test_dpo_resume_continues_from_the_last_checkpoint(cli, write_recipe, tmp_path):
    import shutil

    from safetensors.torch import load_file

    path = write_recipe(recipe(tmp_path, {"name": "dpo"}, max_steps=6, save_every=3, keep_checkpoints=3))
    run = tmp_path / "run"
    assert cli("train", path, "-o", run).code == 0
    whole = load_file(run / "final" / "model.safetensors")
    # Lose everything after step 3, as a kill between the two checkpoints would.
    shutil.rmtree(run / "checkpoints" / "checkpoint-6")
    shutil.rmtree(run / "final")
    res = cli("train", path, "-o", run, "--resume")
    assert res.code == 0, res.err
    assert "resuming from checkpoint-3" in res.err
    resumed = load_file(run / "final" / "model.safetensors")
    assert max((whole[k] - resumed[k]).abs().max().item() for k in whole) < 1e-5
    steps = [r["step"] for r in metrics(run) if "loss" in r and "eval_loss" not in r]
    assert steps == [2, 4, 6]


def test_dpo_refuses_a_run_directory_without_resume(cli, write_recipe, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text("{}")
    res = cli("train", write_recipe(recipe(tmp_path, {"name": "dpo"})), "-o", run)
    assert res.code == 2 and "--resume" in res.err


@pytest.mark.slow
def test_kto_learns_from_unpaired_labels(cli, write_recipe, tmp_path):
    rows = []
    for row in map(json.loads, write_pairs(tmp_path / "pairs.jsonl").read_text().splitlines()):
        rows.append({"question": row["prompt"], "answer": row["chosen"], "ok": "true"})
        rows.append({"question": row["prompt"], "answer": row["rejected"], "ok": "false"})
    data = tmp_path / "kto.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = recipe(tmp_path, {"name": "kto", "beta": 0.1})
    raw["data"] = {"task": "unpaired_preference", "train": str(data), "eval_fraction": 0.2, "max_length": 48,
                   "columns": {"prompt": "question", "completion": "answer", "desirable": "ok"}}
    run = tmp_path / "run"
    res = cli("train", write_recipe(raw), "-o", run, "--json")
    assert res.code == 0, res.err
    ev = json.loads(res.out)["eval"]
    assert ev["rewards/chosen"] > 0 > ev["rewards/rejected"], ev


@pytest.mark.slow
def test_orpo_trains_without_a_reference(cli, write_recipe, tmp_path):
    run = tmp_path / "run"
    res = cli("train", write_recipe(recipe(tmp_path, {"name": "orpo"}, lr=2e-3)), "-o", run, "--json")
    assert res.code == 0, res.err
    train = [r for r in metrics(run) if "rewards/margins" in r and "eval_loss" not in r]
    assert train[-1]["rewards/margins"] > train[0]["rewards/margins"]
    assert json.loads(res.out)["eval"]["rewards/accuracies"] >= 0.9


def test_orpo_without_trl_experimental_is_a_clear_error(cli, write_recipe, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "trl.experimental.orpo", None)  # as if this trl lacked it
    res = cli("train", write_recipe(recipe(tmp_path, {"name": "orpo"})), "-o", tmp_path / "run")
    assert res.code == 2, res.err
    assert "trl.experimental.orpo" in res.err and "Traceback" not in res.err


def test_dpo_options_are_validated(cli, write_recipe, tmp_path):
    res = cli("validate", write_recipe(recipe(tmp_path, {"name": "dpo", "loss_type": "sigmod", "beta": 0})))
    assert res.code == 2
    assert "method.loss_type" in res.err and "method.beta" in res.err
    res = cli("validate", write_recipe({**recipe(tmp_path, {"name": "kto"}),
                                        "data": {"task": "prompts", "train": str(tmp_path / "pairs.jsonl")}}))
    assert res.code == 2 and "does not train task 'prompts'" in res.err
