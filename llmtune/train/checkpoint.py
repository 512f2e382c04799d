"""Resumable checkpoints, written atomically: a temp folder renamed into place, so a kill
mid-write leaves either the old set of checkpoints or the new one, never half of one.

A step folder counts only once its state.json exists (written last, after every other
file is flushed to disk). Folders are deleted by renaming them out of the `step-N`
namespace first, so a kill mid-delete cannot leave a half-deleted checkpoint that still
looks complete.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import torch

STATE_FILE = "state.json"
WEIGHTS_FILE = "trainable.safetensors"
FILES = (WEIGHTS_FILE, "optimizer.pt", "scheduler.pt", "rng.pt", STATE_FILE)
_STEP_DIR = re.compile(r"^step-(\d+)$")
_SCRATCH = (".tmp-step-*", ".del-*")


class CheckpointUnreadable(Exception):
    """A checkpoint's files exist but cannot be read back (disk damage, a foreign file)."""


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict:
    """This process's random streams (each process of a multi-process run has its own)."""
    return _rng_state()


def _rng_state() -> dict:
    version, state, gauss = random.getstate()
    rng = {"torch": torch.get_rng_state(), "python": list(state), "python_version": version,
           "python_gauss": gauss}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, state: dict, keep: int,
                    rng_states: list[dict] | None = None) -> Path:
    """`rng_states`: every process's RNG state, by rank (default: this process's alone)."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(trainable_state(model), str(tmp / WEIGHTS_FILE))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    ranks = rng_states or [_rng_state()]
    # Rank 0's streams at the top level (what a one-process resume reads), every rank's in "ranks".
    torch.save({**ranks[0], "ranks": ranks}, tmp / "rng.pt")
    for name in FILES[:-1]:
        _fsync_file(tmp / name)
    # state.json last: its presence inside a step folder marks the folder complete.
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2))
    _fsync_file(tmp / STATE_FILE)
    if final.exists():  # re-saving a step after a resume from an earlier one
        _discard(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    prune(root, keep)
    return final


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _discard(path: Path) -> None:
    """Delete a step folder: rename it out of the `step-N` namespace first (atomic), then
    remove the files, so no reader ever sees a half-deleted checkpoint as complete."""
    trash = path.parent / f".del-{path.name}-{os.getpid()}"
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; remove older ones, incomplete step
    folders and scratch folders left by a killed writer."""
    for path in complete_checkpoints(root)[:-keep]:
        _discard(path)
    for path in incomplete_checkpoints(root):
        _discard(path)
    for pattern in _SCRATCH:
        for stale in root.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    if not root.exists():
        return []
    found = []
    for path in root.iterdir():
        m = _STEP_DIR.match(path.name)
        if m and path.is_dir():
            found.append((int(m.group(1)), path))
    return sorted(found)


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoints a resume may use, oldest first. Temp folders never qualify, nor do step
    folders without state.json (a writer killed before it finished)."""
    return [p for _, p in _step_dirs(root) if (p / STATE_FILE).is_file()]


def incomplete_checkpoints(root: Path) -> list[Path]:
    return [p for _, p in _step_dirs(root) if not (p / STATE_FILE).is_file()]


def discard_after(root: Path, step: int) -> None:
    """On resume from step N, checkpoints past N belong to a future this run will redo."""
    for n, path in _step_dirs(root):
        if n > step:
            _discard(path)


def read_checkpoint(path: Path) -> dict:
    """Every file of a checkpoint, read fully before anything is applied, so a damaged
    checkpoint leaves the model and optimizer untouched."""
    from safetensors.torch import load_file

    try:
        return {
            "weights": load_file(str(path / WEIGHTS_FILE)),
            "optimizer": torch.load(path / "optimizer.pt", weights_only=True),
            "scheduler": torch.load(path / "scheduler.pt", weights_only=True),
            "rng": torch.load(path / "rng.pt", weights_only=True),
            "state": json.loads((path / STATE_FILE).read_text()),
        }
    except Exception as exc:  # safetensors, pickle and json each raise their own types
        raise CheckpointUnreadable(f"{path}: {type(exc).__name__}: {exc}") from None


def apply_checkpoint(ckpt: dict, path: Path, model, optimizer, scheduler, rank: int = 0, world: int = 1,
                     warn=None) -> dict:
    """Put a read checkpoint back: trainable weights, optimizer, schedule and this process's
    RNG streams."""
    weights = ckpt["weights"]
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    unknown = [n for n in weights if n not in params]
    if missing or unknown:
        from llmtune.errors import UserError

        raise UserError(f"--resume: checkpoint {path} does not match this model (missing "
                        f"{missing[:3]}, unexpected {unknown[:3]}); was the recipe's model or method "
                        f"changed? Resume with the original recipe, or start over with --overwrite")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    rng = _rank_rng(ckpt["rng"], rank, world, path, warn)
    torch.set_rng_state(rng["torch"])
    random.setstate((rng["python_version"], tuple(rng["python"]), rng["python_gauss"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return ckpt["state"]


def _rank_rng(rng: dict, rank: int, world: int, path: Path, warn) -> dict:
    ranks = rng.get("ranks")
    if ranks is not None and len(ranks) == world:
        return ranks[rank]
    if world > 1 or (ranks is not None and len(ranks) > 1):
        if warn is not None and rank == 0:
            saved = len(ranks) if ranks is not None else 1
            warn(f"{path.name} was written by {saved} process(es), this run has {world}: the weights, "
                 f"optimizer and data position resume exactly, the random streams (dropout) do not")
        if ranks is not None and rank < len(ranks):
            return ranks[rank]
        seeded = dict(rng)
        generator = torch.Generator().manual_seed(int(rng["torch"].sum().item()) + rank)
        seeded["torch"] = generator.get_state()
        return seeded
    return rng


def load_latest(root: Path, model, optimizer, scheduler, warn, rank: int = 0,
                world: int = 1) -> tuple[Path, dict] | None:
    """Restore the newest readable checkpoint; an unreadable one is reported and skipped."""
    for path in reversed(complete_checkpoints(root)):
        try:
            ckpt = read_checkpoint(path)
        except CheckpointUnreadable as exc:
            warn(f"checkpoint unreadable, trying an older one: {exc}")
            continue
        return path, apply_checkpoint(ckpt, path, model, optimizer, scheduler, rank, world, warn)
    return None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    return apply_checkpoint(read_checkpoint(path), path, model, optimizer, scheduler)
