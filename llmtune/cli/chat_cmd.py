"""`llmtune chat RUN_DIR | recipe.yaml | MODEL`: talk to a causal LM, answers streamed."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from llmtune.cli.sampling_options import (TARGET_HELP, max_new_tokens_option, sampling, seed_option,
                                          temperature_option, top_p_option)


def chat(
    target: str = typer.Argument(..., metavar="RUN_DIR|RECIPE|MODEL", help=TARGET_HELP),
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt, kept in front of every turn."),
    temperature: float = temperature_option(),
    top_p: float = top_p_option(),
    max_new_tokens: int = max_new_tokens_option(512),
    seed: int = seed_option(),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code shipped with a "
                                           "model named directly (only for models you trust)."),
) -> None:
    """Chat with a trained run or a model in the terminal: answers stream as they are generated,
    prompts are rendered the way the run trained (its chat template, or its plain prompt
    template), and earlier turns are kept (the oldest dropped, with a notice, once they no
    longer fit). /reset starts over, /exit or Ctrl-D leaves, Ctrl-C stops an answer. With
    stdin not a terminal: one prompt per line in, one answer per line out (newlines in an
    answer written as \\n)."""
    from llmtune.chat.session import ChatSession, run_lines, run_terminal
    from llmtune.console import Reporter, quiet_third_party
    from llmtune.runs.inference import open_causal_lm

    params = sampling(max_new_tokens, temperature, top_p, seed)
    tty = sys.stdin.isatty()
    reporter = Reporter()
    quiet_third_party(reporter.interactive)
    lm = open_causal_lm(target, verb="chat", reporter=reporter, trust_remote_code=trust_remote_code)
    session = ChatSession(lm, params, system, reporter, sys.stdout, tty)
    if tty:
        import readline  # noqa: F401  (line editing and history for input())

        run_terminal(session)
    else:
        run_lines(session, sys.stdin)


def register(app: typer.Typer) -> None:
    app.command("chat", short_help="Chat with a trained run or a model, streamed.")(chat)
