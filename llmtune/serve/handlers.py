"""Which worker handler runs which kind of job, for what this server serves."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from llmtune.serve.served import Served
    from llmtune.serve.worker import Job


def handlers_for(served: Served, reporter) -> dict[str, Callable[[list[Job]], None]]:
    from llmtune.serve.encode_jobs import classify_batch, embed_batch

    handlers: dict[str, Callable[[list[Job]], None]] = {}
    if served.encoder is not None:
        handlers["embed"] = partial(embed_batch, served)
    if served.classifier is not None:
        handlers["classify"] = partial(classify_batch, served)
    if served.generator is not None:
        from llmtune.serve.generate_jobs import generate_batch

        handlers["generate"] = partial(generate_batch, served, reporter.log)
    return handlers
