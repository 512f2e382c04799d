"""`llmtune report RUN_DIR`: plots and a markdown summary of one run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def report(
    run: Path = typer.Argument(..., help="A run directory (what `llmtune train` or `llmtune compare` wrote)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where report.md and the PNGs go (default RUN/report)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Summarise one run: recipe digest, trainable and total parameters, artifact size, peak
    memory, wall and train time, tokens/s, final metrics (per class from eval.json), and PNG
    plots of training loss, learning rate and eval metrics against step."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter
    from llmtune.atomic import write_text
    from llmtune.report.plots import run_plots
    from llmtune.report.run_record import read_run
    from llmtune.report.summary import markdown, run_summary

    rec = read_run(run, "report on")
    folder = out if out is not None else rec.path / "report"
    folder.mkdir(parents=True, exist_ok=True)
    summary = run_summary(rec)
    plots = run_plots(rec.metric_records(), folder)
    text = markdown(summary, plots)
    write_text(folder / "report.md", text)
    files = {"markdown": str(folder / "report.md"), **plots}
    if json_out:
        emit_json({**summary, "files": files})
        return
    from rich.console import Console
    from rich.markdown import Markdown

    Console().print(Markdown(text))
    Reporter().log(f"report written to {folder}")


def register(app: typer.Typer) -> None:
    app.command("report", short_help="Summarise one run: plots, digest, metrics.")(report)
