"""The worker's handler for chat and completion requests: a thin call into the shared
generation core (llmtune.generation). Requests that waited together decode as one batch
(`Engine.start`: left-padded, each with its own sampling parameters and cancel flag); each
job hears its own deltas as the batch steps. Prompts are rendered here, on the worker
thread, so the tokenizer is only ever used from one thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from llmtune.serve.api_errors import ApiError, bad_request

if TYPE_CHECKING:
    from llmtune.generation.params import SamplingParams
    from llmtune.serve.served import Served
    from llmtune.serve.worker import Job

STARTED = "started"
"""A streaming job's first piece: its prompt was accepted and decoding began."""


@dataclass
class GenerateJob:
    params: SamplingParams
    stream: bool
    messages: list[dict] | None = None
    """A conversation (chat), rendered the way the model trained."""
    text: str | None = None
    """A raw prompt (completions), continued as it is."""

    @property
    def field(self) -> str:
        return "messages" if self.messages is not None else "prompt"


def prompt_ids(served: Served, job: GenerateJob) -> list[int]:
    from llmtune.generation.prompts import TEXT, PromptFormat

    model = served.generator
    try:
        if job.messages is not None:
            ids = model.prompt_ids(job.messages)
        else:
            ids = PromptFormat(TEXT).render(model.tokenizer, [{"role": "user", "content": job.text}])
    except Exception as exc:  # jinja2 raises from inside the model's own chat template
        raise bad_request(job.field, f"the model's prompt format could not render it ({type(exc).__name__}: "
                                     f"{exc})") from None
    if not ids:
        raise bad_request(job.field, "is empty: a model needs at least one token to continue from")
    if len(ids) >= model.context_length:
        raise ApiError(400, f"{job.field}: the prompt is {len(ids)} tokens; this model's context holds "
                            f"{model.context_length}, and at least one new token must fit: shorten it",
                       param=job.field, code="context_length_exceeded")
    return ids


def generate_batch(served: Served, log: Callable[[str], None], jobs: list[Job]) -> None:
    """Each job finishes with its generation.params.Completion; a streaming job first gets
    STARTED, then every non-empty Delta."""
    from llmtune.generation.params import CANCELLED, Request

    requests, live = [], []
    for job in jobs:
        try:
            ids = prompt_ids(served, job.payload)
        except ApiError as exc:  # this request's fault: the others in the batch go on
            job.fail(exc)
            continue
        requests.append(Request(ids, job.payload.params, cancel=job.cancel))
        live.append(job)
    if not live:
        return
    batch = served.generator.engine.start(requests)
    for job in live:
        if job.payload.stream:
            job.emit(STARTED)
    for deltas in batch:
        for delta in deltas:
            job = live[delta.index]
            if job.payload.stream and (delta.text or delta.finish_reason):
                job.emit(delta)
    for job, completion in zip(live, batch.completions()):
        if completion.finish_reason == CANCELLED:
            log(f"request {job.id}: the client went away; generation stopped after "
                f"{completion.completion_tokens} tokens")
        job.finish(completion)
