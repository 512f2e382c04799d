"""`train.nonfinite_check: log_steps` (the GPU default): no host sync between log steps, yet
a NaN/inf step never reaches the weights (the fused optimizer skips it on the device) and
the run stops, or counts the skip, at the next log step."""

from __future__ import annotations

import json

import pytest
import torch

from test_divergence import _recipe, poison
from test_resume import tensors

pytestmark = pytest.mark.usefixtures("one_thread")


def test_log_steps_stops_at_the_next_log_step_with_weights_untouched(tmp_path, write_recipe, cli, monkeypatch):
    poison(monkeypatch, {3})
    recipe = write_recipe(_recipe(tmp_path, nonfinite_check="log_steps", log_every=4, save_every=2))
    out = tmp_path / "run"
    res = cli("train", recipe, "--output", out)
    assert res.code == 1, res.err
    assert "non-finite loss or gradient at step 3" in res.err and "Traceback" not in res.err
    # Found at the step-4 check, before step 4's checkpoint: the last good one is step-2.
    assert f"last good checkpoint is {out / 'checkpoints' / 'step-2'}" in res.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["speed_features"]["nonfinite_check"] == "log_steps"


def test_log_steps_skip_keeps_weights_finite_and_counts_the_step(tmp_path, write_recipe, cli, monkeypatch):
    poison(monkeypatch, {2, 5}, how="grad")
    recipe = write_recipe(_recipe(tmp_path, nonfinite_check="log_steps", on_nonfinite_loss="skip",
                                  max_skipped_steps=3, log_every=4))
    out = tmp_path / "run"
    res = cli("train", recipe, "--output", out)
    assert res.code == 0, res.err
    assert res.err.count("step skipped, weights unchanged, and it counts as a step") == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["steps"] == 8 and manifest["skipped_steps"] == 2
    assert all(torch.isfinite(t).all() for t in tensors(out / "final").values())
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 2 and all(l == l for l in losses)  # the skipped steps' NaN left out of the mean
