"""Request bodies, as pydantic models: a field the server does not know is refused (400
naming it) rather than silently ignored, and OpenAI fields the server cannot honour are
accepted only at their neutral value (`refuse_unsupported`), so a client never believes a
setting took effect when it did not."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

MAX_INPUTS = 2048
"""Texts per embeddings or classify request (OpenAI's own limit for embeddings)."""


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    user: Optional[str] = None
    """Accepted for compatibility (OpenAI uses it for abuse tracking); not used."""


class EmbeddingsRequest(Request):
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Optional[int] = Field(None, ge=1)


class ClassifyRequest(Request):
    input: Union[str, list[str]]
    text_pair: Union[str, list[str], None] = None
    """The second text of each input, for runs trained on pairs (data.columns.text_pair)."""


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class Sampling(Request):
    """What chat and completions share."""

    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, ge=1)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[dict[str, float]] = None

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    tools: Optional[list[Any]] = None
    tool_choice: Optional[Any] = None
    response_format: Optional[dict[str, Any]] = None
    parallel_tool_calls: Optional[bool] = None


class CompletionRequest(Sampling):
    prompt: Union[str, list[str]]
    echo: bool = False
    logprobs: Optional[int] = None
    suffix: Optional[str] = None
    best_of: Optional[int] = None


# field -> (is the value neutral?, why the server refuses anything else)
_UNSUPPORTED = {
    "n": (lambda v: v == 1, "only n=1 is served; send n requests to get n answers"),
    "presence_penalty": (lambda v: v == 0, "penalties are not implemented; leave it at 0"),
    "frequency_penalty": (lambda v: v == 0, "penalties are not implemented; leave it at 0"),
    "logit_bias": (lambda v: not v, "logit_bias is not implemented"),
    "logprobs": (lambda v: not v, "log probabilities are not returned by this server"),
    "top_logprobs": (lambda v: not v, "log probabilities are not returned by this server"),
    "tools": (lambda v: not v, "tool calling is not implemented"),
    "tool_choice": (lambda v: v in (None, "none"), "tool calling is not implemented"),
    "parallel_tool_calls": (lambda v: not v, "tool calling is not implemented"),
    "response_format": (lambda v: not v or v.get("type") == "text", "only plain text responses are served"),
    "echo": (lambda v: not v, "echo is not implemented"),
    "suffix": (lambda v: not v, "suffix (insertion) is not implemented"),
    "best_of": (lambda v: v in (None, 1), "best_of is not implemented; leave it at 1"),
}


def refuse_unsupported(request: BaseModel) -> tuple[str, str] | None:
    """(field, reason) of the first field set to a value the server cannot honour, if any."""
    for name, (neutral, why) in _UNSUPPORTED.items():
        if name in type(request).model_fields and not neutral(getattr(request, name)):
            return name, why
    return None
