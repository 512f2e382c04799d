"""What one generation request asks for, and what it gives back. No torch here: a server
validates a request's parameters before the model sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from llmtune.errors import UserError

STOP, LENGTH, CANCELLED = "stop", "length", "cancelled"
"""Why a completion ended: a stop token or stop string (or a loop, with `stop_loops`), the
token limit (max_new_tokens or the model's context), or its cancel flag."""


class BadParameter(UserError):
    """A sampling parameter out of range; `field` names it (a server's 400 names the field)."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


class PromptTooLong(UserError):
    """The prompt leaves no room for a single new token in the model's context."""

    def __init__(self, tokens: int, context: int):
        self.tokens, self.context = tokens, context
        super().__init__(f"the prompt is {tokens} tokens; the model's context holds {context}, and at least one "
                         f"new token must fit: shorten the prompt")


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    """New tokens at most (fewer when the model's context ends first)."""
    temperature: float = 0.0
    """0: greedy (the most likely token each step). Above 0: sample from the distribution
    divided by it (below 1 sharper, above 1 flatter)."""
    top_p: float = 1.0
    """Sample only from the smallest set of tokens whose probabilities add up to top_p."""
    seed: int = 0
    """Seed of this request's own random generator: a sampled answer does not depend on what
    else is in its batch."""
    stop: tuple[str, ...] = ()
    """Stop before the first of these strings; the string is not part of the answer."""
    stop_loops: bool = False
    """End the answer where it starts to repeat an earlier stretch of itself (loops.py), cut
    before the repeat."""

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise BadParameter("max_new_tokens", f"must be a whole number of at least 1 (got {self.max_new_tokens!r})")
        if not self.temperature >= 0:  # also refuses NaN
            raise BadParameter("temperature", f"must be 0 (greedy) or more (got {self.temperature!r})")
        if not 0 < self.top_p <= 1:
            raise BadParameter("top_p", f"must be above 0 and at most 1 (got {self.top_p!r})")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise BadParameter("stop", "stop strings must be non-empty strings")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class CancelFlag(Protocol):
    """Anything with is_set() (threading.Event, asyncio.Event): checked between tokens."""

    def is_set(self) -> bool: ...


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    cancel: CancelFlag | None = None


@dataclass
class Delta:
    """One step of one request: the text it adds (may be empty: text is held back while it
    could still turn into a stop string or an unfinished character) and, on its last step,
    why it ended."""

    index: int
    """The request's position in the list handed to the engine."""
    text: str
    finish_reason: str | None = None


@dataclass
class Completion:
    text: str
    """Exactly the concatenation of the request's deltas."""
    token_ids: list[int]
    """The tokens generated (a stop token that ended it not included)."""
    finish_reason: str
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)
