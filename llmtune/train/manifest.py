"""manifest.json: what a run is (versions, git state, hardware, data and tokenizer
fingerprints, parameters) and what it measured (time, tokens, memory, final metrics), so
that a run can be checked on resume and compared with others without reading its logs."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from llmtune import atomic

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


def write_manifest(run, manifest: dict) -> None:
    atomic.write_json(run.manifest, manifest)


def read_manifest(run) -> dict | None:
    try:
        return json.loads(run.manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch, or on CPU the process's peak resident set."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB
