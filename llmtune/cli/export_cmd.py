"""`llmtune export RUN_DIR --out DIR [--merge]`: a merged plain transformers folder, or
the trained parameters alone."""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `llmtune train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the export to."),
    merge: bool = typer.Option(False, "--merge", help="Fold the method into the base weights and write a plain "
                               "transformers folder (LoRA, DoRA, IA3; full finetuning is one already)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it holds an earlier "
                               "export (never a folder llmtune export did not write)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Export a trained run: merged into a plain transformers model, or adapter-only."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter
    from llmtune.runs.export import export_run

    result = export_run(run_dir, out, merge=merge, overwrite=overwrite, reporter=Reporter(json_mode=json_out))
    if json_out:
        emit_json(result)
    else:
        print(f"{result['form']} export of {result['method']} written to {result['out']}: "
              f"{', '.join(result['files'])}")


def register(app: typer.Typer) -> None:
    app.command("export", short_help="Export a trained run: merged model or adapter only.")(export)
