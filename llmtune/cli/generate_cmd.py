"""`llmtune generate RUN --input prompts.jsonl|.txt --out answers.jsonl`: batch generation."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from llmtune.cli.sampling_options import (TARGET_HELP, max_new_tokens_option, sampling, seed_option,
                                          temperature_option, top_p_option)


def generate(
    target: str = typer.Argument(..., metavar="RUN_DIR|RECIPE|MODEL", help=TARGET_HELP),
    inp: Path = typer.Option(..., "--input", "-i", help="Prompts: .txt (one per line) or .jsonl (one object per "
                             "line: \"prompt\", \"messages\" or \"instruction\"/\"input\"; an \"id\" is echoed)."),
    out: Path = typer.Option(..., "--out", "-o", help="Answers, one JSON object per line. Rows already there are "
                             "kept and skipped, so an interrupted run is finished by running it again."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Prompts generated together (left-padded, "
                                   "grouped by length)."),
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt in front of every prompt."),
    stop: Optional[List[str]] = typer.Option(None, "--stop", help="End an answer before this string (repeatable)."),
    temperature: float = temperature_option(),
    top_p: float = top_p_option(),
    max_new_tokens: int = max_new_tokens_option(256),
    seed: int = seed_option(),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code shipped with a "
                                           "model named directly (only for models you trust)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout (rows, tokens/s)."),
) -> None:
    """Answer every prompt of a file with a trained run or a model, in batches, rendered the way
    the run trained; greedy unless --temperature is above 0 (then seeded per row). Resumable:
    rerun the same command after an interruption and only the missing rows are generated."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter, quiet_third_party
    from llmtune.runs.generate import generate_file

    params = sampling(max_new_tokens, temperature, top_p, seed, stop)
    reporter = Reporter(json_mode=json_out)
    quiet_third_party(reporter.interactive)
    result = generate_file(target, inp, out, params, batch_size=batch_size, system=system, reporter=reporter,
                           trust_remote_code=trust_remote_code)
    if json_out:
        emit_json(result)
        return
    rate = f", {result['tokens_per_s']} tokens/s" if result["tokens_per_s"] else ""
    kept = f" ({result['kept']} kept from before)" if result["kept"] else ""
    print(f"{result['generated']} answers written to {result['out']}{kept}: {result['tokens']} tokens in "
          f"{result['seconds']} s{rate}")


def register(app: typer.Typer) -> None:
    app.command("generate", short_help="Answer a file of prompts (batched, resumable).")(generate)
