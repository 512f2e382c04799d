"""The run directory: resolved recipe, manifest, metrics, checkpoints, final model."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from llmtune.errors import UserError


@dataclass
class RunDir:
    path: Path

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


def open_run_dir(path: Path, *, resume: bool, overwrite: bool) -> RunDir:
    """Create the run directory, refusing to clobber an earlier run by accident."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        if overwrite:
            shutil.rmtree(path)
        elif not resume:
            raise UserError(f"{path}: the output directory already holds a run; pass --resume to "
                            f"continue it, --overwrite to replace it, or set output.dir elsewhere")
    path.mkdir(parents=True, exist_ok=True)
    return RunDir(path)


def write_resolved_recipe(run: RunDir, recipe, base_dir: Path) -> None:
    """recipe.yaml in the run: defaults filled in, data paths made absolute so that
    `llmtune eval RUN_DIR` finds them from anywhere."""
    data = recipe.model_dump(mode="json")
    for key in ("train", "eval"):
        src = data["data"].get(key)
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


def _git_sha(folder: Path) -> str | None:
    try:
        res = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


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
        "recipe_git_sha": _git_sha(recipe_path.parent) if recipe_path else None,
        "seed": seed,
        "hardware": _hardware(),
        **extra,
    }


def write_manifest(run: RunDir, manifest: dict) -> None:
    tmp = run.manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run.manifest)


def read_manifest(run: RunDir) -> dict | None:
    try:
        return json.loads(run.manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None
