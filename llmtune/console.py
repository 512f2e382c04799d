"""Where output goes: results on stdout (JSON with --json), logs on stderr, progress
bars only when stderr is a terminal (never in CI logs)."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class Reporter:
    def __init__(self, json_mode: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.quiet = quiet
        self.interactive = sys.stderr.isatty() and not json_mode
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
        return self._console

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self.interactive:
            self.console.print(message, markup=False)
        else:
            print(f"[llmtune {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        self.log(f"warning: {message}")

    @contextmanager
    def progress(self, total: int, description: str, completed: int = 0,
                 counter: str = "{task.completed}/{task.total}"):
        """Yields advance(n=1, **fields). A rich bar on a terminal; nothing otherwise
        (the loop logs a line every `log_every` steps instead). `counter`: the count's format
        (e.g. "{task.completed:.1f}/{task.total}" for fractional progress)."""
        if not self.interactive or self.quiet:
            yield lambda n=1, **kw: None
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn(counter),
                      TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=self.console,
                      transient=False) as bar:
            task = bar.add_task(description, total=total, completed=completed, info="")

            def advance(n: int = 1, **fields):
                info = " ".join(f"{k}={v}" for k, v in fields.items())
                bar.update(task, advance=n, info=info)

            yield advance


def quiet_third_party(interactive: bool) -> None:
    """Keep library chatter out of logs: no weight-loading bars in CI, no deprecation
    notices about calls that peft/transformers make to each other."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*Could not find a config file in.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        if not interactive:
            hf_logging.disable_progress_bar()
    except ImportError:
        pass
