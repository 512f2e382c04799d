"""Divergence: a NaN/inf loss (or gradient) never reaches the weights. With
`on_nonfinite_loss: stop` the run ends (exit 1) naming the step and the last good
checkpoint; with `skip` the step is dropped, at most `train.max_skipped_steps` times."""

from __future__ import annotations

import pytest

import json

import torch

from llmtune.models.task_model import TaskModel
from llmtune.train import checkpoint as ckpt
from test_resume import tensors

pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(tmp_path, **train):
    from conftest import tiny_sst2

    return {
        "model": {"name": "tiny-bert"},
        "data": {"task": "classification", "train": str(tiny_sst2(tmp_path, 32)), "eval_fraction": 0.25,
                 "columns": {"text": "sentence", "label": "label"}, "max_length": 24},
        "method": {"name": "full"},
        "train": {"max_steps": 8, "batch_size": 4, "grad_accum": 2, "lr": 1e-3, "log_every": 1, **train},
    }


def poison(monkeypatch, bad_steps: set[int], how: str = "loss"):
    """Make the forward passes of the given optimizer steps (1-based, grad_accum 2) non-finite:
    the loss itself, or only the gradient (sqrt at 0 has an infinite slope)."""
    real = TaskModel.forward
    calls = {"n": 0}

    def forward(self, input_ids, attention_mask, labels=None):
        loss, logits = real(self, input_ids, attention_mask, labels)
        if self.training:
            calls["n"] += 1
            if (calls["n"] + 1) // 2 in bad_steps:
                if how == "loss":
                    loss = loss * float("nan")
                else:  # finite value (0), NaN gradient
                    w = next(p for p in self.parameters() if p.requires_grad)
                    loss = loss + torch.sqrt(w * 0).sum()
        return loss, logits

    monkeypatch.setattr(TaskModel, "forward", forward)


def test_nan_loss_stops_naming_step_and_keeps_last_good_checkpoint(tmp_path, write_recipe, cli, monkeypatch):
    poison(monkeypatch, {5})
    recipe = write_recipe(_recipe(tmp_path, save_every=2))
    out = tmp_path / "run"
    res = cli("train", recipe, "--output", out)
    assert res.code == 1
    assert "non-finite loss nan at step 5" in res.err
    assert f"last good checkpoint is {out / 'checkpoints' / 'step-4'}" in res.err
    assert "Traceback" not in res.err + res.out
    assert [p.name for p in ckpt.complete_checkpoints(out / "checkpoints")] == ["step-2", "step-4"]
    kept = tensors(out / "checkpoints" / "step-4")
    assert all(torch.isfinite(t).all() for t in kept.values())
    assert not (out / "final").exists()


def test_nan_gradient_with_finite_loss_is_caught_too(tmp_path, write_recipe, cli, monkeypatch):
    poison(monkeypatch, {2}, how="grad")
    res = cli("train", write_recipe(_recipe(tmp_path)), "--output", tmp_path / "run")
    assert res.code == 1
    assert "non-finite gradient norm nan at step 2" in res.err
    assert "No checkpoint was written" in res.err


def test_skip_drops_bad_steps_and_finishes(tmp_path, write_recipe, cli, monkeypatch):
    poison(monkeypatch, {3, 6})
    recipe = write_recipe(_recipe(tmp_path, on_nonfinite_loss="skip", max_skipped_steps=2))
    out = tmp_path / "run"
    res = cli("train", recipe, "--output", out)
    assert res.code == 0, res.err
    assert res.err.count("step skipped, weights unchanged") == 2
    manifest = json.loads((out / "manifest.json").read_text())
    # The two skipped steps are made up: the run still takes 8 real optimizer steps.
    assert manifest["steps"] == 8 and manifest["skipped_steps"] == 2
    assert all(torch.isfinite(t).all() for t in tensors(out / "final").values())
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 8 and all(l == l for l in losses)  # no NaN logged either


def test_skip_is_bounded_by_max_skipped_steps(tmp_path, write_recipe, cli, monkeypatch):
    poison(monkeypatch, set(range(3, 100)))
    recipe = write_recipe(_recipe(tmp_path, on_nonfinite_loss="skip", max_skipped_steps=2))
    res = cli("train", recipe, "--output", tmp_path / "run")
    assert res.code == 1
    assert res.err.count("step skipped") == 2
    assert "more than train.max_skipped_steps (2) steps were skipped" in res.err
    assert "at step 3" in res.err  # the step that was due when the third bad batch came


def test_huge_learning_rate_stops_with_the_divergence_message(tmp_path, write_recipe, cli):
    """No injection: lr 1e30 really blows the weights up after one step."""
    recipe = write_recipe(_recipe(tmp_path, lr=1e30, max_grad_norm=None, save_every=1))
    out = tmp_path / "run"
    res = cli("train", recipe, "--output", out)
    assert res.code == 1 and "Traceback" not in res.err
    assert "training diverged: non-finite loss nan at step 2" in res.err
    # step-1 holds the (huge but finite) weights the NaN came from; nothing NaN was saved.
    assert [p.name for p in ckpt.complete_checkpoints(out / "checkpoints")] == ["step-1"]
    assert all(torch.isfinite(t).all() for t in tensors(out / "checkpoints" / "step-1").values())
