"""`llmtune doctor`: the environment in one table (or one JSON document for a bug report)."""

from __future__ import annotations

import typer


def doctor(json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout.")) -> None:
    """Versions of the stack, devices and memory, bf16, attention implementations, caches and
    free disk, and which optional extras are installed."""
    from llmtune.cli.common import emit_json
    from llmtune.doctor import collect, rows

    report = collect()
    if json_out:
        emit_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="llmtune doctor")
    for name in ("section", "item", "value"):
        table.add_column(name)
    for section, item, value in rows(report):
        table.add_row(section, item, value)
    Console(highlight=False).print(table)


def register(app: typer.Typer) -> None:
    app.command("doctor", short_help="Versions, devices, bf16, attention, caches and extras.")(doctor)
