"""Exact resume: a run SIGKILLed mid-training and resumed with --resume ends with the same
weights, the same logged losses and the same final eval as a run that was never interrupted.

The kill is a real SIGKILL sent by this test to a real `llmtune train` process. The process
is held (tests/hold_driver.py) at a randomly chosen step after its first checkpoint, in the
middle of a gradient-accumulation window, so the kill lands where the test says and never
races the end of the run. The step's seed is printed; LLMTUNE_KILL_SEED=N replays it. Dropout is on, grad_accum > 1, warmup + decay schedule, AdamW.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, tiny_sst2

TOLERANCE = 1e-6  # CPU float32; in practice the weights come out bit-identical


pytestmark = pytest.mark.usefixtures("one_thread")


def llmtune_command() -> list[str]:
    script = Path(sys.executable).with_name("llmtune")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from llmtune.cli import main; main()"]


HOLD_DRIVER = Path(__file__).resolve().parent / "hold_driver.py"


def start_train(recipe: Path, out: Path, log: Path, hold_at: int | None = None, *extra: str) -> subprocess.Popen:
    """`llmtune train` in a subprocess; with `hold_at`, held after that step (tests/hold_driver.py)."""
    command = llmtune_command() if hold_at is None else [sys.executable, str(HOLD_DRIVER), str(hold_at)]
    return subprocess.Popen([*command, "train", str(recipe), "--output", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=dict(os.environ))


def wait_for_text(proc: subprocess.Popen, log: Path, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text() if log.exists() else ""
        if text in content:
            return content
        if proc.poll() is not None:
            raise AssertionError(f"process ended (code {proc.returncode}) before {text!r}:\n{log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"timed out waiting for {text!r}:\n{log.read_text()}")


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({f"{f.name}:{k}": v for k, v in load_file(str(f)).items()})
    return out


def assert_same_weights(a: Path, b: Path) -> float:
    ta, tb = tensors(a), tensors(b)
    assert ta and set(ta) == set(tb)
    worst = max((ta[k].float() - tb[k].float()).abs().max().item() for k in ta)
    assert worst <= TOLERANCE, f"weights differ by {worst}"
    return worst


def loss_records(run: Path) -> list[dict]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in recs]


def classification_recipe(tmp_path: Path) -> dict:
    """Full finetuning of tiny-bert: dropout in the body and before the head."""
    return {
        "model": {"name": "tiny-bert", "head_dropout": 0.2},
        "data": {"task": "classification", "train": str(tiny_sst2(tmp_path, 60)), "eval_fraction": 0.2,
                 "columns": {"text": "sentence", "label": "label"}, "max_length": 32},
        "method": {"name": "full"},
        # 48 rows / batch 4 = 12 batches per epoch; grad_accum 5 makes steps straddle epochs.
        "train": {"epochs": 3, "batch_size": 4, "grad_accum": 5, "lr": 1e-3, "warmup_ratio": 0.2,
                  "save_every": 2, "keep_checkpoints": 2, "log_every": 1, "eval_every": 3, "seed": 3},
    }


def sft_recipe(tmp_path: Path) -> dict:
    """LoRA (with dropout) on tiny-llama, instruction SFT."""
    return {
        "model": {"name": "tiny-llama"},
        "data": {"task": "sft", "train": {"path": str(DATA / "alpaca_tiny.json"), "limit": 40},
                 "eval_fraction": 0.2, "max_length": 64},
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.2, "target_modules": "all-linear"},
        "train": {"max_steps": 10, "batch_size": 4, "grad_accum": 2, "lr": 3e-3, "warmup_ratio": 0.2,
                  "scheduler": "cosine", "save_every": 2, "log_every": 3, "seed": 5},
    }


def torch_dropout_recipe(tmp_path: Path) -> dict:
    """The LoRA run with torch's own dropout masks (train.fast_dropout: false; the default
    draws them in bulk from the same generator): a resumed run must replay either exactly."""
    recipe = sft_recipe(tmp_path)
    recipe["train"]["fast_dropout"] = False
    return recipe


KILL_SEED_ENV = "LLMTUNE_KILL_SEED"


def kill_step(first_save: int, total: int) -> int:
    """The step the run is killed at, drawn from a seed that is printed (pytest shows it with a
    failure) and can be given back through LLMTUNE_KILL_SEED to replay that exact kill."""
    given = os.environ.get(KILL_SEED_ENV)
    seed = int(given) if given else random.SystemRandom().randrange(2**32)
    step = random.Random(seed).randrange(first_save, total - 1)
    print(f"kill at step {step} (of {total}), drawn with seed {seed}; replay with {KILL_SEED_ENV}={seed}")
    return step


def test_kill_step_is_seeded_printed_and_replayable(monkeypatch, capsys):
    monkeypatch.setenv(KILL_SEED_ENV, "1234")
    steps = {kill_step(2, 10) for _ in range(5)}
    assert len(steps) == 1 and 2 <= steps.pop() < 9
    assert f"{KILL_SEED_ENV}=1234" in capsys.readouterr().out
    monkeypatch.delenv(KILL_SEED_ENV)
    kill_step(2, 10)
    seed = capsys.readouterr().out.rsplit("=", 1)[1].strip()
    monkeypatch.setenv(KILL_SEED_ENV, seed)  # the printed seed replays the same draw
    assert kill_step(2, 10) == random.Random(int(seed)).randrange(2, 9)


@pytest.mark.slow
@pytest.mark.parametrize("make_recipe", [classification_recipe, sft_recipe, torch_dropout_recipe],
                         ids=["full-bert", "lora-llama", "lora-llama-torch-dropout"])
def test_sigkill_then_resume_matches_uninterrupted_run(make_recipe, tmp_path, write_recipe, cli):
    recipe_dict = make_recipe(tmp_path)
    recipe = write_recipe(recipe_dict)
    ref, cut = tmp_path / "reference", tmp_path / "killed"

    res = cli("train", recipe, "--output", ref)
    assert res.code == 0, res.err
    total = json.loads((ref / "manifest.json").read_text())["total_steps"]
    first_save = recipe_dict["train"]["save_every"]
    # After the first checkpoint and (so that some work is lost) not on a save boundary
    # only by chance; never the last step.
    hold_at = kill_step(first_save, total)

    log = tmp_path / "killed.log"
    proc = start_train(recipe, cut, log, hold_at)
    wait_for_text(proc, log, f"holding after step {hold_at}")
    last_saved = hold_at - hold_at % first_save
    assert (cut / "checkpoints" / f"step-{last_saved}" / "state.json").exists()
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert not (cut / "final").exists()

    res = cli("train", recipe, "--output", cut, "--resume")
    assert res.code == 0, res.err
    assert f"resumed from step-{last_saved}" in res.err, (hold_at, res.err)

    worst = assert_same_weights(ref / "final", cut / "final")
    print(f"killed at step {hold_at}, resumed from step {last_saved}: max |weight diff| {worst}")
    ref_recs, cut_recs = loss_records(ref), loss_records(cut)
    assert [r["step"] for r in cut_recs] == [r["step"] for r in ref_recs]
    for a, b in zip(ref_recs, cut_recs):
        for key in a:
            assert b[key] == pytest.approx(a[key], abs=TOLERANCE), (hold_at, key, a, b)
    ref_eval = json.loads((ref / "manifest.json").read_text())["final_eval"]
    cut_manifest = json.loads((cut / "manifest.json").read_text())
    assert ref_eval and cut_manifest["final_eval"] == pytest.approx(ref_eval, abs=TOLERANCE)
    assert len(cut_manifest["resumes"]) == 1
