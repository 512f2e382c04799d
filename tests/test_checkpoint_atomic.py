"""Atomic checkpoints: whatever a kill leaves behind (a temp folder, a step folder without
state.json, a damaged newest checkpoint), resume never uses it and falls back to the last
complete one, and still ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llmtune.train import checkpoint as ckpt
from test_resume import assert_same_weights

pytestmark = pytest.mark.usefixtures("one_thread")


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler catches it."""


def _tiny_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_only_folders_with_state_json_count(tmp_path):
    model, opt, sched = _tiny_state()
    root = tmp_path / "checkpoints"
    for step in (2, 4):
        ckpt.save_checkpoint(root, step, model, opt, sched, {"epoch": 0, "batch": step}, keep=5)
    (root / ".tmp-step-6-123").mkdir()  # a writer killed mid-write
    (root / ".tmp-step-6-123" / "trainable.safetensors").write_bytes(b"half")
    shutil.copytree(root / "step-4", root / "step-8")  # a step folder whose state.json never landed
    (root / "step-8" / "state.json").unlink()
    assert [p.name for p in ckpt.complete_checkpoints(root)] == ["step-2", "step-4"]

    # The next save cleans up every leftover and keeps the newest `keep` complete ones.
    ckpt.save_checkpoint(root, 6, model, opt, sched, {"epoch": 0, "batch": 6}, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-4", "step-6"]
    for name in ckpt.FILES:
        assert (root / "step-6" / name).is_file()


def test_state_json_is_written_last(tmp_path, monkeypatch):
    """Kill the writer at each file in turn: no kill ever yields a complete-looking step folder."""
    model, opt, sched = _tiny_state()
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 1, model, opt, sched, {}, keep=5)
    real_save = torch.save
    for kill_at in range(3):  # optimizer.pt, scheduler.pt, rng.pt
        calls = []

        def dying_save(obj, f, *a, **kw):
            calls.append(f)
            if len(calls) > kill_at:
                open(f, "wb").write(b"partial")
                raise Killed
            return real_save(obj, f, *a, **kw)

        monkeypatch.setattr(ckpt.torch, "save", dying_save)
        with pytest.raises(Killed):
            ckpt.save_checkpoint(root, 2, model, opt, sched, {}, keep=5)
        assert [p.name for p in ckpt.complete_checkpoints(root)] == ["step-1"]
        assert not (root / "step-2").exists()


def test_unreadable_checkpoint_falls_back_to_an_older_one(tmp_path):
    model, opt, sched = _tiny_state()
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 1, model, opt, sched, {"marker": "one"}, keep=5)
    ckpt.save_checkpoint(root, 2, model, opt, sched, {"marker": "two"}, keep=5)
    (root / "step-2" / "trainable.safetensors").write_bytes(b"\x00" * 10)  # disk damage
    warnings = []
    path, state = ckpt.load_latest(root, model, opt, sched, warnings.append)
    assert path.name == "step-1" and state["marker"] == "one"
    assert "step-2" in warnings[0] and "trying an older one" in warnings[0]


@pytest.mark.slow
def test_resume_after_kill_mid_checkpoint_uses_last_complete_one(tmp_path, write_recipe, cli, monkeypatch):
    from test_resume import sft_recipe

    recipe_dict = sft_recipe(tmp_path)
    recipe_dict["train"].update({"max_steps": 8, "save_every": 2, "keep_checkpoints": 3})
    recipe = write_recipe(recipe_dict)
    ref, cut = tmp_path / "reference", tmp_path / "crashed"
    assert cli("train", recipe, "--output", ref).code == 0

    # Die inside the step-6 write, after the weights file and part of the optimizer state.
    real_save = torch.save

    def dying_save(obj, f, *a, **kw):
        if "step-6" in str(f):
            open(f, "wb").write(b"partial")
            raise Killed
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(Killed):
        cli("train", recipe, "--output", cut)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    root = cut / "checkpoints"
    assert [p.name for p in root.glob(".tmp-step-6-*")], "the temp folder of the killed write is left"
    assert [p.name for p in ckpt.complete_checkpoints(root)] == ["step-2", "step-4"]
    # Make it worse: the newest complete checkpoint is damaged, and a step folder without
    # state.json claims a later step.
    (root / "step-4" / "optimizer.pt").write_bytes(b"garbage")
    shutil.copytree(root / "step-2", root / "step-7")
    (root / "step-7" / "state.json").unlink()

    res = cli("train", recipe, "--output", cut, "--resume")
    assert res.code == 0, res.err
    assert "step-4" in res.err and "trying an older one" in res.err
    assert "resumed from step-2" in res.err
    assert_same_weights(ref / "final", cut / "final")
    assert json.loads((cut / "manifest.json").read_text())["final_eval"] == pytest.approx(
        json.loads((ref / "manifest.json").read_text())["final_eval"], abs=1e-6)
    assert not list(root.glob(".tmp-*")) and not (root / "step-7").exists()
