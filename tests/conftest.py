"""Test set-up: offline, private caches, and a helper that drives the real CLI entry point."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

# Never touch a model hub; keep datasets/transformers caches out of the user's home.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
DATA = RECIPES / "data"
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("LLMTUNE_CACHE", str(cache / "llmtune"))
    monkeypatch.setenv("HF_HOME", str(cache / "hf"))


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `llmtune ARGS...` through the real entry point (exit codes, error rendering), with
    the app `main()` builds for those arguments."""
    from llmtune.cli import app_for
    from llmtune.cli.common import run_app

    def invoke(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["llmtune", *map(str, args)])
        capsys.readouterr()
        code = run_app(app_for(sys.argv[1:]))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe dict (or YAML text) to tmp_path/name and return its path."""

    def write(content, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


def tiny_sst2(tmp_path: Path, n: int = 64) -> Path:
    """The first n rows of the bundled SST-2 subset, as a TSV in tmp_path."""
    lines = (DATA / "sst2_train.tsv").read_text().splitlines()[: n + 1]
    path = tmp_path / f"sst2_{n}.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def one_thread(monkeypatch):
    """One intra-op torch thread, here and in child processes. Tiny models are dominated by
    per-op overhead, and on a shared 2-core machine torch's spinning OpenMP workers made
    tiny runs 20-100x slower (measured). Test modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)
