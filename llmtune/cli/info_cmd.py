"""`llmtune methods` and `llmtune schema`: what exists, and the recipe's JSON Schema."""

from __future__ import annotations

import typer


def methods(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the finetuning methods, one line each."""
    from llmtune.methods.registry import all_methods

    found = all_methods()
    if json_out:
        from llmtune.cli.common import emit_json

        emit_json({name: {"summary": m.summary, "tasks": sorted(m.tasks), "can_merge": m.can_merge}
                   for name, m in sorted(found.items())})
        return
    width = max(map(len, found))
    for name, m in sorted(found.items()):
        typer.echo(f"{name:<{width}}  {m.summary}")


def schema(markdown: bool = typer.Option(False, "--markdown", help="Print the recipe reference as Markdown.")) -> None:
    """Print the recipe JSON Schema (point your editor's YAML plugin at it)."""
    if markdown:
        from llmtune.recipe.reference import render_reference

        typer.echo(render_reference(), nl=False)
        return
    import json

    from llmtune.recipe.field_docs import describe_json_schema
    from llmtune.recipe.full_schema import Recipe

    typer.echo(json.dumps(describe_json_schema(Recipe.model_json_schema(), Recipe), indent=2))


def register(app: typer.Typer) -> None:
    app.command("methods", short_help="List the finetuning methods.")(methods)
    app.command("schema", short_help="Print the recipe JSON Schema.")(schema)
