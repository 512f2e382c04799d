"""OpenAI's response and stream-chunk shapes for chat and completions, from the generation
core's Completion and Delta (what the official clients parse)."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmtune.generation.params import Completion

DONE_LINE = "data: [DONE]\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(c: Completion) -> dict:
    return {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens}


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class Shapes:
    """One response's envelope (id, created, model) for one endpoint."""

    def __init__(self, chat: bool, model: str):
        self.chat = chat
        self.model = model
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict]) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices,
                "system_fingerprint": None}

    def whole(self, c: Completion) -> dict:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason,
                      "logprobs": None}
            return {**self._envelope("chat.completion", [choice]), "usage": usage(c)}
        choice = {"index": 0, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
        return {**self._envelope("text_completion", [choice]), "usage": usage(c)}

    def chunk(self, text: str | None, finish_reason: str | None = None, *, first: bool = False) -> str:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return sse(self._envelope("chat.completion.chunk", [choice]))
        choice = {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
        return sse(self._envelope("text_completion", [choice]))

    def usage_chunk(self, c: Completion) -> str:
        return sse({**self._envelope("chat.completion.chunk" if self.chat else "text_completion", []),
                    "usage": usage(c)})
