"""`llmtune validate RECIPE...`: check recipes without importing torch; every error at once."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer


def validate(
    recipes: List[Path] = typer.Argument(..., help="Recipe files to check."),
    set_: List[str] = typer.Option([], "--set", help="Override a recipe key (repeatable)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Check recipes against the schema: unknown keys, wrong types, missing files. Exit 2 if any fail."""
    from llmtune.cli.common import emit_json
    from llmtune.errors import RecipeError, UserError
    from llmtune.recipe import load_recipe

    report, failed = [], []
    for path in recipes:
        try:
            load_recipe(path, set_)
            report.append({"recipe": str(path), "ok": True, "problems": []})
        except RecipeError as exc:
            failed.append(exc)
            report.append({"recipe": str(path), "ok": False, "problems": exc.problems or [str(exc)]})
    if json_out:
        emit_json({"ok": not failed, "recipes": report})
    else:
        for item in report:
            if item["ok"]:
                typer.echo(f"ok: {item['recipe']}")
    if failed:
        if not json_out:
            raise UserError("\n".join(e.render() for e in failed))
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("validate", short_help="Check recipes against the schema; every error at once.")(validate)
