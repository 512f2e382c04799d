"""The `llmtune` command. Each verb lives in its own module; heavy libraries are imported
inside the command functions so `llmtune --help` stays instant."""

from __future__ import annotations

import sys

import typer

from llmtune.cli import eval_cmd, info_cmd, train_cmd, validate_cmd
from llmtune.cli import embed_cmd
from llmtune.cli import export_cmd
from llmtune.cli import ask_cmd, index_cmd, query_cmd
from llmtune.cli import compare_cmd, report_cmd
from llmtune.cli import doctor_cmd, preview_cmd
from llmtune.cli import serve_cmd
from llmtune.cli import chat_cmd, generate_cmd

COMMAND_MODULES = (train_cmd, eval_cmd, validate_cmd, info_cmd, embed_cmd, export_cmd, index_cmd, query_cmd,
                   ask_cmd, report_cmd, compare_cmd, preview_cmd, doctor_cmd, serve_cmd,
                   chat_cmd, generate_cmd)


def new_app(modules=COMMAND_MODULES) -> typer.Typer:
    cli = typer.Typer(
        name="llmtune",
        help="Finetune and use pretrained language models from YAML recipes.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Plain help and usage errors (click's own formatter): typer's rich panels import rich
        # and markdown-it, ~0.19 s of the ~0.34 s `llmtune --help` took with them (2 CPU cores).
        rich_markup_mode=None,
    )
    for module in modules:
        module.register(cli)
    return cli


app = new_app()


def app_for(argv: list[str]) -> typer.Typer:
    """The app with only the command `argv` names (all of them for `--help`, no command or an
    unknown one). On every start typer reads the signature of each registered command, ~60 ms
    for all of them here, so a run of one verb pays for one. A callback keeps it a group, so
    the verb is still read as the verb."""
    name = next((a for a in argv if not a.startswith("-")), None)
    command = next((c for c in app.registered_commands if c.name == name), None) if name else None
    if command is None:
        return app
    one = new_app((sys.modules[command.callback.__module__],))
    one.callback()(lambda: None)
    return one


def main() -> None:
    """Console entry point: user errors exit 2 with a message, never a traceback."""
    from llmtune.cli.common import run_app

    sys.exit(run_app(app_for(sys.argv[1:])))
