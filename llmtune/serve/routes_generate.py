"""`POST /v1/chat/completions` and `POST /v1/completions`, whole or streamed as server-sent
events (OpenAI's chunks, then `data: [DONE]`). Requests become generation-core parameters
here; the worker decodes. A client that goes away cancels its job: streamed, Starlette
cancels the response and the generator's `finally` sets the flag; whole, a watcher on the
connection does."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, AsyncIterator

from llmtune.serve.api_errors import bad_request, error_body
from llmtune.serve.generate_jobs import STARTED, GenerateJob
from llmtune.serve.schemas import refuse_unsupported
from llmtune.serve.served import CHAT, COMPLETIONS
from llmtune.serve.shapes import DONE_LINE, Shapes, sse
from llmtune.serve.worker import DONE, ERROR

if TYPE_CHECKING:
    from llmtune.serve.context import Context
    from llmtune.serve.schemas import ChatRequest, CompletionRequest, Sampling
    from llmtune.serve.worker import Job

DEFAULT_MAX_TOKENS = 256
MAX_STOPS = 4
# The core's parameter names -> the request fields a 400 names.
_FIELDS = {"max_new_tokens": "max_tokens", "temperature": "temperature", "top_p": "top_p", "stop": "stop",
           "seed": "seed"}


def sampling(body: Sampling, max_tokens: int | None):
    """The core's SamplingParams; greedy unless a temperature above 0 is sent; an absent seed
    draws a fresh one (two sampled requests differ, as with OpenAI)."""
    from llmtune.generation.params import BadParameter, SamplingParams

    refused = refuse_unsupported(body)
    if refused:
        raise bad_request(*refused)
    stops = body.stops()
    if len(stops) > MAX_STOPS:
        raise bad_request("stop", f"{len(stops)} stop strings; at most {MAX_STOPS}")
    try:
        return SamplingParams(max_new_tokens=max_tokens or DEFAULT_MAX_TOKENS, temperature=body.temperature or 0.0,
                              top_p=1.0 if body.top_p is None else body.top_p,
                              seed=secrets.randbits(32) if body.seed is None else body.seed, stop=tuple(stops))
    except BadParameter as exc:
        raise bad_request(_FIELDS.get(exc.field, exc.field), str(exc).split(": ", 1)[-1]) from None


async def chat(body: ChatRequest, request, ctx: Context):
    ctx.check_model(body.model, CHAT)
    params = sampling(body, body.max_completion_tokens or body.max_tokens)
    # "developer" is OpenAI's newer name for the system role; chat templates know "system".
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    job = GenerateJob(params, body.stream, messages=messages)
    return await _answer(ctx, job, request, Shapes(True, ctx.served.id), _include_usage(body))


async def completions(body: CompletionRequest, request, ctx: Context):
    ctx.check_model(body.model, COMPLETIONS)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1 or not isinstance(prompts[0], str):
        raise bad_request("prompt", "send one prompt (a string) per request")
    job = GenerateJob(sampling(body, body.max_tokens), body.stream, text=prompts[0])
    return await _answer(ctx, job, request, Shapes(False, ctx.served.id), _include_usage(body))


def _include_usage(body: Sampling) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


async def _answer(ctx: Context, payload: GenerateJob, request, shapes: Shapes, include_usage: bool):
    from starlette.responses import StreamingResponse

    job = ctx.submit("generate", payload)
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
    try:
        if not payload.stream:
            return shapes.whole(await job.result())
        kind, value = await job.next_event()  # STARTED, or the error that refused the prompt
        if kind == ERROR:
            raise value
    except asyncio.CancelledError:
        job.cancel.set()
        raise
    finally:
        watcher.cancel()  # a stream's own disconnect handling takes over from here
    return StreamingResponse(_events(job, shapes, include_usage), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(job: Job, shapes: Shapes, include_usage: bool) -> AsyncIterator[str]:
    try:
        if shapes.chat:  # OpenAI's chat streams open with the role; completions streams do not
            yield shapes.chunk(None, first=True)
        while True:
            kind, value = await job.next_event()
            if kind == ERROR:
                yield sse(error_body(f"generation failed ({type(value).__name__}); the server log has the details",
                                     "server_error"))
                return
            if kind == DONE:
                if include_usage:
                    yield shapes.usage_chunk(value)
                yield DONE_LINE
                return
            if value is not STARTED and value is not None:
                yield shapes.chunk(value.text, value.finish_reason)
    finally:  # the client went away (Starlette cancels us) or we are done: either way stop decoding
        job.cancel.set()


async def _cancel_on_disconnect(request, job: Job) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.cancel.set()
            return
