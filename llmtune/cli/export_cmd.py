"""`llmtune export RUN_DIR --out DIR [--merge]`: a merged plain transformers folder, or
the trained parameters alone; `--format gguf [--quant TYPE]`: one GGUF file for llama.cpp and
Ollama with a Modelfile, checked against the run."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `llmtune train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the export to."),
    merge: bool = typer.Option(False, "--merge", help="Fold the method into the base weights and write a plain "
                               "transformers folder (LoRA, DoRA, IA3; full finetuning is one already)."),
    fmt: str = typer.Option("transformers", "--format", help="transformers (a folder for from_pretrained) or gguf "
                            "(one file for llama.cpp and Ollama, merged, with an Ollama Modelfile)."),
    quant: str | None = typer.Option(None, "--quant", help="GGUF weight type: f16 (the default), f32, bf16, q8_0, "
                                     "q5_1, q5_0, q4_1, q4_0 (with --format gguf)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it holds an earlier "
                               "export (never a folder llmtune export did not write)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Export a trained run: merged into a plain transformers model, adapter-only, or GGUF."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter
    from llmtune.errors import UserError

    reporter = Reporter(json_mode=json_out)
    if quant is not None and fmt != "gguf":
        raise UserError(f"--quant {quant}: applies to --format gguf only; add --format gguf, or drop --quant")
    if fmt == "gguf":
        result = _gguf(run_dir, out, quant or "f16", overwrite, reporter, json_out)
    elif fmt == "transformers":
        from llmtune.runs.export import export_run

        result = export_run(run_dir, out, merge=merge, overwrite=overwrite, reporter=reporter)
    else:
        raise UserError(f"--format {fmt}: use transformers (the default) or gguf")
    if json_out:
        emit_json(result)
    elif fmt == "gguf":
        print(f"gguf export of {result['method']} written to {result['out']}: {', '.join(result['files'])}")
    else:
        print(f"{result['form']} export of {result['method']} written to {result['out']}: "
              f"{', '.join(result['files'])}")


def _gguf(run_dir: Path, out: Path, quant: str, overwrite: bool, reporter, json_out: bool) -> dict:
    """The GGUF export; a failed parity check exits 1 with its figures (no file is left)."""
    from llmtune.cli.common import emit_json
    from llmtune.runs.export_gguf import export_gguf
    from llmtune.runs.gguf_parity import ParityFailed

    try:
        return export_gguf(run_dir, out, quant=quant, overwrite=overwrite, reporter=reporter)
    except ParityFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        if json_out:
            emit_json({"ok": False, "error": str(exc), "parity": exc.report})
        raise typer.Exit(exc.exit_code) from None


def register(app: typer.Typer) -> None:
    app.command("export", short_help="Export a trained run: merged model, adapter only, or GGUF.")(export)
