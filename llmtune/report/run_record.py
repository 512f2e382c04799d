"""One run directory as compare and report read it: manifest, resolved recipe, status.

The numbers come from manifest.json and recipe.yaml only. metrics.jsonl is opened on
request, for the learning-curve plots. A run from before the session recorded `status` is
taken as finished when it has a final/ folder, and its status is shown as unknown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmtune.errors import UserError
from llmtune.recipe.migrations import migrate
from llmtune.report.fields import UNFINISHED

FAILED = frozenset({"failed", "diverged"})


@dataclass
class RunRecord:
    path: Path
    manifest: dict
    recipe: dict = field(default_factory=dict)
    """The run's resolved recipe.yaml ({} when absent)."""
    error_override: str | None = None
    """An error compare saw itself (the run raised) that the manifest does not record."""
    status_override: str | None = None

    @property
    def status(self) -> str:
        if self.status_override:
            return self.status_override
        status = self.manifest.get("status")
        return status if isinstance(status, str) and status else "unknown"

    @property
    def error(self) -> str | None:
        return self.error_override or self.manifest.get("error")

    @property
    def has_final(self) -> bool:
        return (self.path / "final").is_dir() or self.manifest.get("method") == "in-context"

    @property
    def complete(self) -> bool:
        """Has a final evaluation to rank: finished, or an older run (no status) with final/."""
        return self.status == "finished" or (self.status == "unknown" and self.has_final)

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED or (self.status == "unknown" and not self.has_final)

    def get(self, key: str):
        """A manifest value, None when the run does not record it (shown as unknown)."""
        return self.manifest.get(key)

    @property
    def method(self) -> str | None:
        return self.manifest.get("method") or (self.recipe.get("method") or {}).get("name")

    @property
    def final_eval(self) -> dict:
        value = self.manifest.get("final_eval")
        return value if isinstance(value, dict) else {}

    def metric_records(self) -> list[dict]:
        """metrics.jsonl, for plots only (a line cut by a kill mid-write is skipped)."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
                out.append(record)
        return out


def read_run(path: Path, verb: str = "compare") -> RunRecord:
    """The run at `path`; a UserError naming it when it is missing or not a run. `verb`: the
    command reading it (compare, report), as the message says what that command cannot do."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory; pass a run directory (the folder `llmtune train` writes)")
    manifest_file = path / "manifest.json"
    if not manifest_file.exists():
        only_recipe = (path / "recipe.yaml").exists()
        why = ("only recipe.yaml is there: the run stopped before training began; run it again"
               if only_recipe else "no manifest.json, which `llmtune train` writes with metrics.jsonl, "
               "recipe.yaml and final/; pass the folder a training run wrote: its --output or output.dir, "
               "by default runs/<recipe name>")
        raise UserError(f"{path}: not a run llmtune can {verb} ({why})")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{manifest_file}: unreadable manifest ({exc}); the run directory is damaged") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{manifest_file}: not a JSON object; the run directory is damaged")
    return RunRecord(path=path, manifest=manifest, recipe=_read_recipe(path / "recipe.yaml"))


def _read_recipe(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: unreadable recipe ({exc}); the run directory is damaged") from None
    if not isinstance(data, dict):
        return {}
    migrate(data, str(path))  # keys renamed since read under their new names, so recipe diffs compare like with like
    return data


def read_runs(paths: list[Path]) -> list[RunRecord]:
    """Every run, or one UserError listing every path that is not a readable run."""
    records, problems = [], []
    seen: dict[Path, Path] = {}
    for path in paths:
        # One run given twice (a repeated path, `run` and `run/`, a symlink, overlapping globs)
        # would be two "seeds" of its row, with a spread of 0 that no second seed measured.
        key = Path(path).resolve()
        if key in seen:
            problems.append(f"{path}: the same run as {seen[key]}, given twice; pass each run directory once")
            continue
        seen[key] = Path(path)
        try:
            records.append(read_run(path))
        except UserError as exc:
            problems.append(str(exc))
    if problems:
        noun = "run directory" if len(problems) == 1 else "run directories"
        raise UserError(f"{len(problems)} {noun} cannot be compared", problems)
    return records
