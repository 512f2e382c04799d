"""Human-readable results (rich tables on stdout)."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_metrics(title: str, metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if isinstance(v, (int, float, str)):
            table.add_row(k, _fmt(v))
        elif isinstance(v, dict) and k != "per_class":  # e.g. a preference eval's baselines
            for sub, value in v.items():
                if isinstance(value, (int, float, str)) or value is None:
                    table.add_row(f"{k}.{sub}", "n/a" if value is None else _fmt(value))
    console.print(table)
    per_class = metrics.get("per_class")
    if per_class:
        t2 = Table(title="per class")
        for col in ("label", "precision", "recall", "f1", "support"):
            t2.add_column(col, justify="right" if col != "label" else "left")
        for name, row in per_class.items():
            t2.add_row(name, *(_fmt(row[c]) for c in ("precision", "recall", "f1", "support")))
        console.print(t2)


def print_result(result: dict) -> None:
    summary = {k: v for k, v in result.items() if k != "eval"}
    print_metrics("training", summary)
    if result.get("eval"):
        print_metrics("evaluation", result["eval"])
