"""`llmtune preview RECIPE`: the first examples token by token with their loss mask, lengths,
truncation, token totals, a memory estimate and (with --time) the time per epoch. Nothing is
trained for good, nothing is written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

TIMED_STEPS = 3
ROWS = {
    "train_rows": "rows read for training", "eval_rows": "rows read for evaluation",
    "truncated": "rows truncated to data.max_length",
    "dropped_empty": "rows dropped as empty",
    "dropped_truncated": "rows dropped: truncation left nothing to train on",
    "dropped_too_long": "rows dropped by the reward trainer as too long",
}


def preview(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    n: int = typer.Option(3, "-n", "--examples", min=0, help="How many examples to show token by token."),
    split: str = typer.Option("train", "--split", help="train or eval."),
    time_it: bool = typer.Option(False, "--time", help=f"Also run {TIMED_STEPS} optimizer steps (after a warm-up) "
                                 "on real weights and estimate the time per epoch; nothing is saved."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe key (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Show what the model will see: examples after the whole data pipeline, coloured by loss mask
    (plain markers when not a terminal), lengths, truncated and dropped rows, training tokens, a
    memory estimate, and with --time the time per epoch."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter, quiet_third_party
    from llmtune.preview.run import preview_recipe
    from llmtune.recipe import load_recipe

    if split not in ("train", "eval"):
        raise typer.BadParameter(f"{split!r}: choose train or eval", param_hint="--split")
    loaded = load_recipe(recipe, set_ or [])
    reporter = Reporter(json_mode=json_out)
    quiet_third_party(reporter.interactive)
    result = preview_recipe(loaded, n, split, TIMED_STEPS if time_it else 0, reporter)
    if json_out:
        emit_json(to_json(result))
    else:
        print_preview(result, color=sys.stdout.isatty())


def to_json(result: dict) -> dict:
    from llmtune.preview.show import example_json, special_ids

    tok = result["tokenizer"]
    special = special_ids(tok)
    out = {k: v for k, v in result.items() if k not in ("examples", "tokenizer")}
    out["examples"] = [example_json(e, tok, special) for e in result["examples"]]
    return out


def print_preview(result: dict, color: bool) -> None:
    from rich.console import Console

    from llmtune.preview.show import LEGEND, headline, plain_tokens, rich_tokens, special_ids, token_texts

    console = Console(highlight=False, soft_wrap=True) if color else None
    out = (lambda text: console.print(text, markup=False)) if color else print
    tok = result["tokenizer"]
    special = special_ids(tok)
    virtual = result["virtual_tokens"]
    in_front = virtual["count"] if virtual and virtual["where"] == "input" else 0
    out(f"preview of {result['recipe']}: {result['task']} with {result['method']} on {result['model']}, "
        f"{result['split']} split, {result['shown']} of {result['examples_in_split']} examples")
    if not color:
        out(f"legend: {LEGEND}")
    for line in [result["rendering"], *result["notes"]]:
        if line:
            out(line)
    if virtual and virtual["where"] == "attention":
        out(f"prefix: {virtual['count']} learned key/value positions in front of every attention layer "
            f"(not tokens of the input)")
    for i, example in enumerate(result["examples"], 1):
        out("")
        for seq in example.sequences:
            out(f"--- example {i}: {headline(seq)}")
            texts = token_texts(tok, seq.ids)
            if color:
                console.print(rich_tokens(seq, texts, special, in_front))
            else:
                out(plain_tokens(seq, texts, special, in_front))
    out("")
    _print_summary(result, console)


def _print_summary(result: dict, console) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="preview")
    table.add_column("what")
    table.add_column("value", justify="right")
    s = result["lengths"]
    table.add_row("sequence length (min / median / p95 / max)",
                  f"{s['min']} / {s['median']:g} / {s['p95']:g} / {s['max']}")
    over = result["rows_counted_over"]
    for key, value in result["rows"].items():
        what = ROWS.get(key, key.replace("_", " "))
        table.add_row(what if key.endswith("_rows") else f"{what} ({over})", f"{value:,}")
    if result["tokens"]:
        t = result["tokens"]
        masked = t["trained_per_epoch"] is not None
        table.add_row("tokens per epoch" + (" (trained on)" if masked else ""),
                      f"{t['per_epoch']:,}" + (f" ({t['trained_per_epoch']:,})" if masked else ""))
        table.add_row("planned steps / epochs", f"{t['steps']:,} / {t['epochs']:g}")
        table.add_row("tokens over the run" + (" (trained on)" if masked else ""),
                      f"{t['total']:,}" + (f" ({t['trained_total']:,})" if masked else ""))
    m = result["memory"]
    if "total_mib" in m:
        table.add_row("parameters (trainable)", f"{m['total_parameters']:,} ({m['trainable_parameters']:,}, "
                                                f"{m['trainable_percent']:.3g}%)")
        b = m["batch"]
        for part in ("weights", "gradients", "optimizer", "activations"):
            what = part if part != "activations" else f"activations ({b['sequences']} x {b['tokens_per_sequence']} tokens)"
            table.add_row(f"memory: {what}", f"{m[part + '_mib']:,.1f} MiB")
        table.add_row("memory: estimated total", f"{m['total_mib']:,.1f} MiB")
    timed = result.get("time")
    if timed and "seconds_per_step" in timed:
        table.add_row("time per step (measured)", f"{timed['seconds_per_step']:.3f} s")
        table.add_row("time per epoch (estimated)", f"{timed['seconds_per_epoch']:,.1f} s "
                                                    f"({timed['steps_per_epoch']:,} steps)")
        table.add_row("peak memory (measured)", f"{timed['peak_memory_mib']:,.1f} MiB")
    elif timed:
        table.add_row("time", timed["skipped"])
    (console or Console(highlight=False)).print(table)


def register(app: typer.Typer) -> None:
    app.command("preview", short_help="Show what the model will see, after the data pipeline.")(preview)
