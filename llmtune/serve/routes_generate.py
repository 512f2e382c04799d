"""`POST /v1/chat/completions` and `POST /v1/completions`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmtune.serve.served import CHAT, COMPLETIONS

if TYPE_CHECKING:
    from llmtune.serve.context import Context
    from llmtune.serve.schemas import ChatRequest, CompletionRequest


async def chat(body: ChatRequest, ctx: Context):
    ctx.check_model(body.model, CHAT)
    raise NotImplementedError


async def completions(body: CompletionRequest, ctx: Context):
    ctx.check_model(body.model, COMPLETIONS)
    raise NotImplementedError
