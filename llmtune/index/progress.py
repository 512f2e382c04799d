"""What an `llmtune index` run shows while it works.

On a terminal: a bar over the files to index that moves with every embedded batch (a file
counts in fractions as its chunks are embedded), with chunks done and chunks/s beside it.
Without a terminal (CI, a log file): a plain line every `LOG_EVERY` seconds with the same
figures. Skipped files are counted apart, never as files done.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from llmtune.console import Reporter

LOG_EVERY = 30.0
"""Seconds between plain progress lines when stderr is not a terminal."""


class IndexProgress:
    def __init__(self, reporter: Reporter, total: int, advance: Callable, every: float):
        self.reporter = reporter
        self.total = total
        self._advance = advance
        self.every = every
        self.files = 0.0
        self.chunks = 0
        self.skipped = 0
        self.started = self._last_log = time.monotonic()

    def rate(self) -> float:
        return self.chunks / max(time.monotonic() - self.started, 1e-9)

    def embedded(self, chunks: int, files: float) -> None:
        """`chunks` more chunks embedded, worth `files` of a file (fractions add up to 1 per file)."""
        self.chunks += chunks
        self.moved(files)

    def moved(self, files: float) -> None:
        self.files += files
        self._advance(files, chunks=f"{self.chunks:,}", per_s=f"{self.rate():.1f}", skipped=self.skipped)
        self._maybe_log()

    def skip(self) -> None:
        self.skipped += 1
        self._advance(0, chunks=f"{self.chunks:,}", per_s=f"{self.rate():.1f}", skipped=self.skipped)

    def committed(self) -> None:
        """A group's files are in the store: a plain line when not on a terminal."""
        if not self.reporter.interactive:
            self._last_log = time.monotonic()
            self.reporter.log(f"committed: {self.line()}")

    def line(self) -> str:
        skipped = f" ({self.skipped} skipped)" if self.skipped else ""
        return (f"indexed {self.files:.1f} of {self.total} file(s){skipped}, {self.chunks:,} chunks embedded, "
                f"{self.rate():.1f} chunks/s")

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if self.reporter.interactive or now - self._last_log < self.every:
            return
        self._last_log = now
        self.reporter.log(self.line())


@contextmanager
def index_progress(reporter: Reporter, total: int, every: float | None = None) -> Iterator[IndexProgress]:
    every = LOG_EVERY if every is None else every
    with reporter.progress(total, "index files", counter="{task.completed:.1f}/{task.total}") as advance:
        yield IndexProgress(reporter, total, advance, every)
