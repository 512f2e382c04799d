"""The turns of one chat and the prompt they make, fitted into the model's context.

The prompt must leave room for the answer (max_new_tokens, or half the context if that is less).
When the conversation grows past that, the oldest turns (a user message and its answer) are
dropped, never the system message or the newest message; an answer gets the room left in the
context, up to max_new_tokens; a message that leaves no room at all is refused. Each is said, never
a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmtune.runs.inference import InferenceModel


def answer_reserve(max_new_tokens: int, context: int) -> int:
    """Room kept for the answer when old turns are dropped: max_new_tokens, but never more
    than half the context (a limit as long as the context would leave no room for history)."""
    return min(max_new_tokens, context // 2)


@dataclass
class Fitted:
    ids: list[int]
    max_new_tokens: int
    dropped: int = 0
    """Earlier turns left out of this prompt (and forgotten)."""
    notice: str | None = None


class MessageTooLong(Exception):
    def __init__(self, tokens: int, context: int):
        self.tokens, self.context = tokens, context
        super().__init__(f"this message is {tokens} tokens with the system prompt; the model's context holds "
                         f"{context}, with room left for at least one token of answer: shorten it")


@dataclass
class Conversation:
    lm: "InferenceModel"
    system: str | None = None
    turns: list[dict] = field(default_factory=list)
    """User and assistant messages so far (the system message is kept apart)."""

    def reset(self) -> None:
        self.turns.clear()

    def _messages(self, turns: list[dict]) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + turns

    def prompt_for(self, text: str, max_new_tokens: int) -> Fitted:
        """The prompt that asks `text` next; drops old turns (for good) to fit. Raises
        MessageTooLong when `text` cannot fit even alone."""
        context = self.lm.context_length
        reserve = answer_reserve(max_new_tokens, context)
        new = [{"role": "user", "content": text}]
        dropped = 0
        while True:
            ids = self.lm.prompt_ids(self._messages(self.turns + new))
            if len(ids) <= context - reserve or not self.turns:
                break
            del self.turns[:2]  # the oldest user message and its answer
            dropped += 1
        notice = None
        if dropped:
            notice = (f"the conversation no longer fits the model's context ({context} tokens, {reserve} kept for "
                      f"the answer): dropped the {dropped} oldest turn{'s' if dropped > 1 else ''}")
        if len(ids) >= context:
            raise MessageTooLong(len(ids), context)
        room = min(max_new_tokens, context - len(ids))
        if room < reserve:
            extra = f"this message leaves room for {room} tokens of answer"
            notice = f"{notice}; {extra}" if notice else extra
        return Fitted(ids, room, dropped, notice)

    def record(self, text: str, answer: str) -> None:
        """Keep a finished (or stopped) exchange as history."""
        self.turns += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
