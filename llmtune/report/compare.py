"""`llmtune compare` over runs already read: refuse what cannot be ranked, build the table,
write it (markdown, CSV, JSON) and its plots."""

from __future__ import annotations

import json
from pathlib import Path

from llmtune.atomic import write_text
from llmtune.errors import UserError
from llmtune.report.eval_identity import check_same_eval
from llmtune.report.table import build_table


def shown(path) -> str:
    """A path as the user would type it: relative to the working directory when inside it."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def refuse_unfinished(records) -> None:
    """A run still training, or stopped half way, has no final score: exit 2 naming it."""
    problems = []
    for rec in records:
        if not rec.unfinished:
            continue
        why = (f"status {rec.status}" if rec.status != "unknown"
               else "no final/ folder and no status in its manifest")
        problems.append(f"{shown(rec.path)}: not finished ({why}); finish it with `llmtune train RECIPE "
                        f"--output {shown(rec.path)} --resume`, or leave it out")
    if problems:
        raise UserError(f"{len(problems)} of the runs have not finished, so they have no final scores to "
                        f"compare (--force lists them as rows without scores)", problems)


def compare_records(records, *, names: dict | None = None, baseline: str | None = None,
                    force: bool = False) -> dict:
    if not force:
        refuse_unfinished(records)
    ranked = [rec for rec in records if rec.complete]
    sets, assigned, mixed = check_same_eval(ranked, force=force, shown=shown)
    table = build_table(records, metric=_metric(sets, ranked), names=names, baseline=baseline, eval_sets=sets,
                        assigned=assigned, forced=force)
    table["mixed_eval"] = mixed
    table["eval_unknown"] = [str(rec.path) for rec in ranked if rec.path not in assigned]
    return table


def _metric(sets: dict, ranked) -> str:
    """The primary metric the runs' eval_identity names; without one (older runs, --force),
    the one policy's choice (data/eval_identity.primary_metric) over what they recorded."""
    from llmtune.data.eval_identity import primary_metric

    for identity in sets.values():
        return identity["metric"]
    recorded = {key for rec in ranked for key in rec.final_eval}
    return primary_metric(None, recorded)


def write_outputs(table: dict, records, out: Path) -> dict[str, str]:
    """table.md, table.csv, table.json and the plots, into `out`; returns name -> path."""
    from llmtune.report.plots import compare_plots
    from llmtune.report.render import csv_text, markdown

    out.mkdir(parents=True, exist_ok=True)
    by_path = {str(rec.path): rec for rec in records}
    curves = {row["name"]: [(by_path[p].get("seed"), by_path[p].metric_records()) for p in row["runs"]]
              for row in table["rows"] if row["ranked"]}
    files = {"markdown": str(out / "table.md"), "csv": str(out / "table.csv"), "json": str(out / "table.json")}
    files.update(compare_plots(table, curves, out))
    write_text(out / "table.md", markdown(table))
    write_text(out / "table.csv", csv_text(table))
    write_text(out / "table.json", json.dumps({**table, "files": files}, indent=2, default=str) + "\n")
    return files
