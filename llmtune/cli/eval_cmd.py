"""`llmtune eval`: metrics as a table, or JSON for CI."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def eval_(
    target: Path = typer.Argument(..., help="A run directory (scores final/) or a recipe (scores the base model)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Score only the first N eval rows."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe key (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Evaluate a trained run or a base model on the recipe's eval split; writes eval.json into a run.

    Classification: accuracy, macro-F1, per-class scores, confusion matrix. Causal LM: loss
    and perplexity; sft data also generates answers (exact match, token F1). Retrieval: nDCG@10,
    MAP@10, recall@10/100 and MRR at document level, per query in eval.json (docs/retrieval.md).
    The eval section of the recipe adds in-context learning (eval.shots) and prompt templates
    (eval.templates): see docs/evaluation.md."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter, quiet_third_party
    from llmtune.index.demos import select_from_store  # pymilvus loads only if a recipe selects from a store
    from llmtune.index.store_eval import evaluate_through_store
    from llmtune.runs.evaluate import evaluate_target

    reporter = Reporter(json_mode=json_out)
    quiet_third_party(reporter.interactive)
    result = evaluate_target(target, set_ or [], limit, reporter, store_demos=select_from_store,
                             store_retrieval=evaluate_through_store)
    if json_out:
        emit_json(result)
        return
    from llmtune.cli.tables import print_metrics

    if result.get("templates"):
        print_templates(result["templates"], result["best_template"])
    print_metrics(f"eval: {target}", result)
    for sample in result.get("samples") or []:
        print(f"--- reference: {_one_line(sample['reference'])}\n    output:    {_one_line(sample['output'])}")


def _one_line(text: str, width: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_templates(rows: list[dict], best: dict) -> None:
    """One row per template, best first (the order eval.json keeps too); with a selection
    split, the score it was chosen by beside the score it is reported with."""
    from rich.console import Console
    from rich.table import Table

    metric = best["metric"]
    split = "selection" in rows[0]
    title = f"templates, by {metric}" + (" on the selection rows (held out: the other rows)" if split else "")
    table = Table(title=title, caption=best["note"])
    # Split: the headline metric on each part (the rest is in eval.json); else every scalar.
    columns = [metric] if split else [c for c in ("accuracy", "macro_f1", "exact_match", "f1") if c in rows[0]]
    heads = ["held out"] if split else columns
    for name in ("rank", "#", "template", *(["selection"] if split else []), *heads, "shortened"):
        table.add_column(name, justify="left" if name == "template" else "right")
    for row in rows:
        chosen_by = [f"{row['selection'][metric]:.4f}"] if split else []
        table.add_row(str(row["rank"]), str(row["index"]), _one_line(row["template"].replace("\n", "\\n"), 60),
                      *chosen_by, *(f"{row[c]:.4f}" for c in columns), f"{row['prompts_shortened']}/{row['prompts']}")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("eval", short_help="Evaluate a trained run or a base model.")(eval_)
