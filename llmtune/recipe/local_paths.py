"""What a recipe names on this machine, checked at validate time without loading anything:
its data files (present, and regular files) and a local `model.name` (a model folder).

Each check returns problems as (key path, message) pairs; the loader says where each key
is (file:line or `--set`) and lists them in the file's order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmtune.data.readers import not_a_data_file
from llmtune.errors import UserError
from llmtune.models.local_model import local_model_problem
from llmtune.models.run_source import is_run_dir

KeyPath = tuple[Any, ...]
Problem = tuple[KeyPath, str]

DATA_SOURCES = (("data", "train"), ("data", "eval"), ("eval", "demos"))
"""Every place a recipe names a data source (a path or a source mapping): checked at validate
time, made absolute in a run."""
RETRIEVAL_FILES = ("documents", "qrels")
"""The files `data.retrieval` names (plain paths), checked and made absolute the same way."""


def resolve_data_path(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p)


def _named_files(raw: dict) -> list[tuple[KeyPath, Any]]:
    """(key path, path as written) of every data file the raw recipe names."""
    found: list[tuple[KeyPath, Any]] = []
    for section, key in DATA_SOURCES:
        parent = raw.get(section)
        src = parent.get(key) if isinstance(parent, dict) else None
        found.append(((section, key, "path"), src.get("path") if isinstance(src, dict) else None))
    data = raw.get("data")
    retrieval = data.get("retrieval") if isinstance(data, dict) else None
    if isinstance(retrieval, dict):
        found.extend((("data", "retrieval", key), retrieval.get(key)) for key in RETRIEVAL_FILES)
    return found


def data_file_problems(raw: dict, base_dir: Path) -> list[Problem]:
    problems: list[Problem] = []
    for loc, path in _named_files(raw):
        if not (isinstance(path, str) and path):
            continue
        try:
            resolved = resolve_data_path(path, base_dir)
            if not resolved.exists():
                problems.append((loc, f"file not found: {resolved} (paths are relative to the recipe's folder)"))
                continue
            problem = not_a_data_file(resolved)
        except (OSError, RuntimeError, ValueError) as exc:  # too long, NUL byte, `~nobody`
            problems.append((loc, f"not a usable path ({exc})"))
            continue
        if problem is not None:
            problems.append((loc, f"{resolved}: {problem}"))
    return problems


def model_folder_problems(raw: dict) -> list[Problem]:
    model = raw.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    if not (isinstance(name, str) and name):
        return []
    try:
        problem = local_model_problem(name)
        if problem is None and is_run_dir(name):  # a finished run as the model: one that can merge
            from llmtune.methods.parent_run import problem as parent_problem

            problem = parent_problem(name)
    except UserError as exc:
        problem = str(exc)
    except (OSError, RuntimeError, ValueError) as exc:
        problem = f"not a usable path ({exc})"
    return [(("model", "name"), problem)] if problem else []
