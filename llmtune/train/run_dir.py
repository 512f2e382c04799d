"""The run directory: resolved recipe, manifest, metrics, checkpoints, final model."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from llmtune.errors import UserError


@dataclass
class RunDir:
    path: Path
    tracker: object | None = None
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


def write_resolved_recipe(run: RunDir, recipe, base_dir: Path) -> None:
    """recipe.yaml in the run: defaults filled in, data paths made absolute so that
    `llmtune eval RUN_DIR` finds them from anywhere."""
    from llmtune.recipe.load import DATA_SOURCES

    data = recipe.model_dump(mode="json")
    for section, key in DATA_SOURCES:
        src = data[section].get(key)
        if src and src.get("path"):
            src["path"] = str((base_dir / src["path"]).resolve()) if not Path(src["path"]).is_absolute() \
                else src["path"]
    tmp = run.recipe.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, run.recipe)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("llmtune", "torch", "transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _git(folder: Path, *args: str) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _git_state(folder: Path) -> dict:
    """The commit of the recipe's folder, and whether that folder has uncommitted changes
    (a sha alone would claim a recipe edited after the commit)."""
    sha = _git(folder, "rev-parse", "HEAD")
    if not sha:
        return {"recipe_git_sha": None}
    status = _git(folder, "status", "--porcelain", "--", ".")
    return {"recipe_git_sha": sha, "recipe_git_dirty": bool(status)}


def _hardware() -> dict:
    import torch

    hw = {"platform": platform.platform(), "cpus": os.cpu_count(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        hw["gpu"] = torch.cuda.get_device_name(0)
        hw["gpus"] = torch.cuda.device_count()
    return hw


def build_manifest(recipe_path: Path | None, seed: int, extra: dict) -> dict:
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
        **(_git_state(Path(recipe_path).resolve().parent) if recipe_path else {"recipe_git_sha": None}),
        "seed": seed,
        "hardware": _hardware(),
        **extra,
    }


def recipe_hash(recipe) -> str:
    """Hash of the resolved recipe, minus where the run is written."""
    data = recipe.model_dump(mode="json")
    data.pop("output", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# What a resume compares with the manifest of the run it continues.
WATCHED = {
    "recipe_hash": "the recipe",
    "versions": "library versions",
    "recipe_git_sha": "the git commit of the recipe's folder",
    "data_fingerprint": "the data (file contents, data settings or tokenizer)",
    "tokenizer_hash": "the tokenizer",
    "chat_template_hash": "the chat template",
    "seed": "train.seed",
    "method": "the method",
    "model": "the model",
    "total_steps": "the planned number of steps",
    "hardware": "the hardware",
}


def manifest_changes(old: dict | None, new: dict) -> list[str]:
    """One warning per watched field that differs between a run's manifest and now."""
    if not old:
        return ["resuming a run without a readable manifest.json: cannot check that versions, data and "
                "tokenizer are unchanged"]
    out = []
    for key, what in WATCHED.items():
        before, now = old.get(key), new.get(key)
        if before == now:
            continue
        if isinstance(before, dict) and isinstance(now, dict):
            diff = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
                             if before.get(k) != now.get(k))
        else:
            diff = f"{before!r} -> {now!r}"
        out.append(f"resuming, but {what} changed since the run started ({key}: {diff}); the result "
                   f"may differ from an uninterrupted run")
    return out


def write_manifest(run: RunDir, manifest: dict) -> None:
    tmp = run.manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run.manifest)


def read_manifest(run: RunDir) -> dict | None:
    try:
        return json.loads(run.manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None


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


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch, or on CPU the process's peak resident set."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB
