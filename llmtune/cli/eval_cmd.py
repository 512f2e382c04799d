"""`llmtune eval RUN_DIR|RECIPE`: metrics as a table, or JSON for CI."""

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
    """Evaluate a trained run or a base model on the recipe's eval split; writes eval.json into a run."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter
    from llmtune.evaluate.runner import evaluate_target

    result = evaluate_target(target, set_ or [], limit, Reporter(json_mode=json_out))
    if json_out:
        emit_json(result)
    else:
        from llmtune.cli.tables import print_metrics

        print_metrics(f"eval: {target}", result)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)
