"""The comparison table as text: a rich table on the terminal, markdown, CSV and JSON.

Scores that are fractions (accuracy, F1) are shown in percent and their differences in
points; `?` marks a value the run's manifest does not record.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

FRACTIONS = frozenset({"accuracy", "macro_f1", "f1", "exact_match"})
UNKNOWN = "?"
STAT_COLUMNS = ("train_seconds", "wall_seconds", "tokens_per_second", "peak_memory_mb", "seconds_per_query")


def is_fraction(metric: str) -> bool:
    return metric in FRACTIONS or metric.endswith("_accuracy")


def fmt_score(s: dict, metric: str) -> str:
    if s["mean"] is None:
        return UNKNOWN
    scale, digits = (100, 1) if is_fraction(metric) else (1, 4)
    text = f"{s['mean'] * scale:.{digits}f}"
    return text + (f" ± {s['std'] * scale:.{digits}f}" if s["std"] is not None else "")


def fmt_stat(s: dict, digits: int = 0) -> str:
    if s["mean"] is None:
        return UNKNOWN
    text = f"{s['mean']:,.{digits}f}"
    return text + (f" ± {s['std']:,.{digits}f}" if s["std"] is not None else "")


def fmt_count(v) -> str:
    return UNKNOWN if v is None else f"{v:,.0f}"


def fmt_percent(v) -> str:
    if v is None:
        return UNKNOWN
    return "0%" if v == 0 else f"{v:.3g}%"


def fmt_bytes(s: dict) -> str:
    v = s["mean"]
    if v is None:
        return UNKNOWN
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"


def fmt_delta(d: dict | None, metric: str) -> str:
    if d is None:
        return "–"
    scale, digits = (100, 1) if is_fraction(metric) else (1, 4)
    text = f"{d['value'] * scale:+.{digits}f}"
    return text + (" (noise)" if d["noise"] else "")


def fmt_value(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return Path(v).name if v.startswith("/") else v
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def fmt_options(options: dict) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in options.items()) or "–"


def one_line(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def display_rows(table: dict, error_width: int = 100) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the terminal and markdown tables."""
    metric = table["metric"]
    unit = " %" if is_fraction(metric) else ""
    secondary = _secondary_keys(table)
    mixed = bool(table["forced"] and len(table["eval_sets"]) > 1)
    per_query = any(row["seconds_per_query"]["mean"] is not None for row in table["rows"])
    header = ["name", "method", "options", *table["hyperparameters"], "seeds", "trainable", "% of model", "artifact",
              "train s", "tokens/s", "peak MB", *(["s/query"] if per_query else []), f"{metric}{unit}", *(f"{k}{' %' if is_fraction(k) else ''}"
                                                                    for k in secondary),
              f"Δ vs {table['baseline']}" if table["baseline"] else "Δ", "pareto", "status"]
    if mixed:
        header.insert(2, "eval set")
    cells = []
    for row in table["rows"]:
        seeds = ",".join(UNKNOWN if s is None else str(s) for s in row["seeds"])
        status = row["status"] if not row["error"] else f"{row['status']}: {one_line(row['error'], error_width)}"
        line = [row["name"], row["method"] or UNKNOWN, fmt_options(row["options"]),
                *(fmt_value(row["hyperparameters"].get(k))
                                                        for k in table["hyperparameters"]),
                seeds, fmt_count(row["trainable_parameters"]), fmt_percent(row["trainable_percent"]),
                fmt_bytes(row["artifact_bytes"]), fmt_stat(row["train_seconds"], 1),
                fmt_stat(row["tokens_per_second"]), fmt_stat(row["peak_memory_mb"]),
                *([fmt_stat(row["seconds_per_query"], 3)] if per_query else []), fmt_score(row["metric"], metric),
                *(fmt_score(row["secondary"][k], k) if k in row["secondary"] else "–" for k in secondary),
                "baseline" if row["name"] == table["baseline"] and row["ranked"] else fmt_delta(row["delta"], metric),
                ", ".join(row["pareto"]) or "–", status]
        if mixed:
            line.insert(2, row["eval_set"] or UNKNOWN)
        cells.append(line)
    return header, cells


def _secondary_keys(table: dict) -> list[str]:
    keys: list[str] = []
    for row in table["rows"]:
        keys += [k for k in row["secondary"] if k not in keys]
    return keys


def notes(table: dict) -> list[str]:
    out = [f"{table['metric']}: mean ± sample std over the seeds that finished; Δ: difference of means to the "
           f"baseline, '(noise)' when within the seed spread of a difference; pareto: no other row is better on "
           f"{table['metric']} and at least as cheap in trainable parameters (params), train time (time) or "
           f"peak memory (memory); ? = not recorded in the run's manifest."]
    if table["forced"] and table.get("mixed_eval"):
        sets = "; ".join(f"{k}: {_describe(v)}" for k, v in table["eval_sets"].items())
        unknown = len(table.get("eval_unknown") or [])
        what = "; ".join(filter(None, [f"eval sets {sets}" if sets else "",
                                       f"{unknown} run(s) record no eval_identity" if unknown else ""]))
        out.append(f"WARNING (--force): these runs were not shown to be evaluated alike, so their scores may not "
                   f"be comparable ({what}).")
    return out


def _describe(identity: dict) -> str:
    from llmtune.report.eval_identity import describe

    return describe(identity)


def markdown(table: dict) -> str:
    header, cells = display_rows(table, error_width=160)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines + [""] + notes(table)) + "\n"


def print_terminal(table: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    header, cells = display_rows(table, error_width=60)
    view = Table(title=title)
    for name in header:
        view.add_column(name, justify="left" if name in ("name", "method", "options", "status", "pareto") else "right",
                        no_wrap=name != "status")
    for row in cells:
        view.add_row(*row)
    console = Console()
    if not console.is_terminal:  # a log or a pipe: no width to fit, keep each row on one line
        console = Console(width=400)
    console.print(view)
    for note in notes(table):
        console.print(note, markup=False, highlight=False)


def csv_text(table: dict) -> str:
    """One line per row, raw numbers (no units, no rounding)."""
    secondary = _secondary_keys(table)
    fields = ["name", "method", "options", "status", "error", "seeds", "n", "eval_set",
              *(f"hp.{k}" for k in table["hyperparameters"]), "trainable_parameters", "total_parameters",
              "trainable_percent", "artifact_bytes"]
    for key in (*STAT_COLUMNS, "metric", *secondary):
        name = table["metric"] if key == "metric" else key
        fields += [f"{name}_mean", f"{name}_std"]
    fields += ["delta", "delta_noise", "pareto", "runs"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in table["rows"]:
        line = {"name": row["name"], "method": row["method"], "options": json.dumps(row["options"]),
                "status": row["status"], "error": row["error"],
                "seeds": " ".join(str(s) for s in row["seeds"]), "n": row["n"], "eval_set": row["eval_set"],
                "trainable_parameters": row["trainable_parameters"], "total_parameters": row["total_parameters"],
                "trainable_percent": row["trainable_percent"], "artifact_bytes": row["artifact_bytes"]["mean"],
                "delta": row["delta"]["value"] if row["delta"] else None,
                "delta_noise": row["delta"]["noise"] if row["delta"] else None,
                "pareto": " ".join(row["pareto"]), "runs": ";".join(row["runs"])}
        line.update({f"hp.{k}": _csv_value(row["hyperparameters"].get(k)) for k in table["hyperparameters"]})
        for key in STAT_COLUMNS:
            line[f"{key}_mean"], line[f"{key}_std"] = row[key]["mean"], row[key]["std"]
        line[f"{table['metric']}_mean"], line[f"{table['metric']}_std"] = row["metric"]["mean"], row["metric"]["std"]
        for key in secondary:
            s = row["secondary"].get(key) or {"mean": None, "std": None}
            line[f"{key}_mean"], line[f"{key}_std"] = s["mean"], s["std"]
        writer.writerow(line)
    return out.getvalue()


def _csv_value(v):
    return json.dumps(v) if isinstance(v, (list, dict)) else v
