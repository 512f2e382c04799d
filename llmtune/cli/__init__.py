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

app = typer.Typer(
    name="llmtune",
    help="Finetune and use pretrained language models from YAML recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (train_cmd, eval_cmd, validate_cmd, info_cmd, embed_cmd, export_cmd, index_cmd, query_cmd, ask_cmd,
               report_cmd, compare_cmd, preview_cmd, doctor_cmd):
    module.register(app)


def main() -> None:
    """Console entry point: user errors exit 2 with a message, never a traceback."""
    from llmtune.cli.common import run_app

    sys.exit(run_app(app))
