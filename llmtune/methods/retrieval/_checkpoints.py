"""Resumable state of a contrastive run: checkpoints/step-N/ holds the trainable weights
(safetensors), the optimizer and scheduler states and state.json. A checkpoint is written
into a temporary folder and renamed into place, so a kill leaves it whole or absent; the
newest complete one is what `--resume` continues from."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

STATE = "state.json"


def save(folder: Path, step: int, model, optimizer, scheduler, keep: int) -> Path:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step}"
    # A folder, so not llmtune.atomic (files only): filled under a temporary name, renamed whole.
    tmp = folder / f".step-{step}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    (tmp / STATE).write_text(json.dumps({"step": step}) + "\n")  # last: marks the checkpoint complete
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in complete(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step-*") if (p / STATE).is_file() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def load(path: Path, model, optimizer, scheduler) -> int:
    """Restore a checkpoint into the model, optimizer and scheduler; the step it was taken at."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(path / "trainable.safetensors"))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in state]
    if missing:
        from llmtune.errors import UserError

        raise UserError(f"{path}: the checkpoint does not hold {missing[0]} (and {len(missing) - 1} more) that "
                        f"this recipe trains; was method.lora changed? Resume with the recipe the run began with, "
                        f"or start over with --overwrite")
    model.load_state_dict(state, strict=False)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    return int(json.loads((path / STATE).read_text())["step"])
