"""The run directory: its layout, opening it without clobbering an earlier run, the resolved
recipe, metrics.jsonl, and the atomic final/ writer. (manifest.json: manifest.py.)"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TYPE_CHECKING

import yaml

from llmtune import atomic
from llmtune.errors import UserError

if TYPE_CHECKING:
    from llmtune.train.tracking import Trackers


@dataclass
class RunDir:
    path: Path
    tracker: Trackers | None = None
    """The run's experiment trackers (train/tracking.py), which see every metrics record."""

    @property
    def recipe(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def final(self) -> Path:
        return self.path / "final"

    def log_metrics(self, record: dict) -> None:
        with open(self.metrics, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        if self.tracker is not None:
            self.tracker.log(record)

    def drop_metrics_after(self, step: int) -> None:
        """On resume, records written after the checkpoint belong to the lost part of the run."""
        kept = [rec for rec in self.read_metrics() if rec.get("step", 0) <= step] if step else []
        atomic.write_text(self.metrics, "".join(json.dumps(rec) + "\n" for rec in kept))

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a kill mid-write
        return out


RUN_MARKERS = ("manifest.json", "metrics.jsonl", "checkpoints", "final")
"""What makes a folder a run worth protecting: something a training run produced."""


def is_run_dir(path: Path) -> bool:
    return any((Path(path) / name).exists() for name in RUN_MARKERS)


def open_run_dir(path: Path, *, resume: bool, overwrite: bool) -> RunDir:
    """Create the run directory, refusing to clobber an earlier run (or anything else) by accident."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: the output path is a file, not a directory; set output.dir or --output "
                        f"to a directory")
    if path.exists() and any(path.iterdir()):
        run, leftover = is_run_dir(path), _only_recipe(path)
        if resume and not run and not leftover:
            raise UserError(f"--resume: {path} is not an llmtune run directory (no manifest.json, "
                            f"checkpoints/ or final/); check --output / output.dir")
        if overwrite:
            if not run and not leftover:
                # --overwrite deletes; only ever delete what llmtune wrote.
                raise UserError(f"--overwrite: {path} holds files but is not an llmtune run directory "
                                f"(no manifest.json, checkpoints/ or final/); refusing to delete it. Choose "
                                f"an empty or new output.dir")
            shutil.rmtree(path)
        elif not resume and not leftover:
            what = "already holds a run" if run else "is not empty"
            raise UserError(f"{path}: the output directory {what}; pass --resume to continue it, "
                            f"--overwrite to replace it, or set output.dir (or --output) elsewhere")
    path.mkdir(parents=True, exist_ok=True)
    return RunDir(path)


def _only_recipe(path: Path) -> bool:
    """A run that stopped before training began (bad data, a missing model) leaves only its
    recipe.yaml: nothing to protect, so the corrected command may reuse the folder."""
    return {p.name for p in path.iterdir()} <= {"recipe.yaml"}


def write_resolved_recipe(run: RunDir, recipe) -> None:
    """recipe.yaml in the run: defaults filled in, paths absolute (the loader resolved them),
    so that `llmtune eval RUN_DIR` finds the data from anywhere."""
    data = recipe.model_dump(mode="json")
    atomic.write_text(run.recipe, yaml.safe_dump(data, sort_keys=False))


def write_final(run: RunDir, fill: Callable[[Path], None]) -> None:
    """Write final/ atomically: `fill` writes into a temp folder, which then replaces final/.
    The old final/ is moved aside first and removed last, so a crash at any point leaves
    a complete final/ (old or new) or a folder that names itself temporary."""
    tmp = run.path / ".final.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    fill(tmp)
    if not run.final.exists():
        os.replace(tmp, run.final)
        return
    old = run.path / ".final.old"
    if old.exists():
        shutil.rmtree(old)
    os.replace(run.final, old)
    os.replace(tmp, run.final)
    shutil.rmtree(old)


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (the size of an artifact on disk)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
