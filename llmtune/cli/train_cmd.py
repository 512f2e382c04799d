"""`llmtune train RECIPE`: run a recipe end to end into its run directory."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe key: train.lr=1e-4 (repeatable)."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue the run in the output directory from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run in the output directory."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory (overrides output.dir)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document with the results on stdout."),
) -> None:
    """Train the model a recipe describes; writes checkpoints, metrics and final/ to the run directory."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter, quiet_third_party
    from llmtune.index.demos import select_from_store  # pymilvus loads only if a recipe selects from a store
    from llmtune.recipe import load_recipe
    from llmtune.train.distributed import is_main_process
    from llmtune.train.session import run_recipe

    if resume and overwrite:
        raise typer.BadParameter("--resume and --overwrite contradict each other; pick one")
    loaded = load_recipe(recipe, set_ or [])
    main = is_main_process()
    reporter = Reporter(json_mode=json_out, quiet=not main)  # one process speaks under torchrun
    quiet_third_party(reporter.interactive)
    result = run_recipe(loaded, reporter, output=output, resume=resume, overwrite=overwrite,
                        store_demos=select_from_store)
    if not main:
        return
    if json_out:
        emit_json(result)
    else:
        from llmtune.cli.tables import print_result

        print_result(result)


def register(app: typer.Typer) -> None:
    app.command("train", short_help="Train the model a recipe describes.")(train)
