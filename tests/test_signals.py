"""Graceful stop: SIGINT / SIGTERM sent to a real `llmtune train` process save a checkpoint
at the next optimizer step, exit 128+signal with a message that says how to resume, and
`--resume` then finishes the run at the same weights as an uninterrupted one."""

from __future__ import annotations

import json
import signal

import pytest

from llmtune.train import checkpoint as ckpt
from test_resume import assert_same_weights, classification_recipe, start_train, wait_for_text

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_and_resume_finishes(sig, tmp_path, write_recipe, cli):
    recipe_dict = classification_recipe(tmp_path)
    recipe_dict["train"].update({"epochs": 2, "save_every": 100})  # no periodic checkpoint at all
    recipe = write_recipe(recipe_dict)
    out, log = tmp_path / "run", tmp_path / "run.log"

    proc = start_train(recipe, out, log, hold_at=2)  # held mid-accumulation of step 3
    wait_for_text(proc, log, "holding after step 2")
    assert not ckpt.complete_checkpoints(out / "checkpoints")
    proc.send_signal(sig)
    code = proc.wait(60)
    err = log.read_text()
    assert code == 128 + sig, err
    assert "Traceback" not in err
    # The interrupted step finishes, is saved, and the message says how to go on.
    assert f"{sig.name}: stopped at step 3" in err
    assert f"llmtune train {recipe} --output {out} --resume" in err
    assert [p.name for p in ckpt.complete_checkpoints(out / "checkpoints")] == ["step-3"]
    assert not (out / "final").exists()

    res = cli("train", recipe, "--output", out, "--resume")
    assert res.code == 0, res.err
    assert "resumed from step-3" in res.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"] == manifest["total_steps"] and (out / "final" / "model.safetensors").exists()
    if sig == signal.SIGTERM:  # once is enough to show the stop lost nothing
        ref = tmp_path / "reference"
        assert cli("train", recipe, "--output", ref).code == 0
        assert_same_weights(ref / "final", out / "final")
