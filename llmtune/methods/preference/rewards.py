"""Rule-based rewards to use as `method.reward_function` (with `method.reward_kwargs`).

Each takes the completions (text, or chat messages whose last content is the reply) and
returns one float per completion, as trl's GRPO/RLOO expect. They double as examples of
the signature your own reward functions need."""

from __future__ import annotations


def completion_text(completion) -> str:
    """The reply's text, whether the rows were plain text or chat messages."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion)
    return str(completion)


def char_fraction(completions, char: str = "e", **kw) -> list[float]:
    """Share of the completion's characters that are `char` (0 for an empty completion)."""
    out = []
    for c in completions:
        text = completion_text(c)
        out.append(text.count(char) / len(text) if text else 0.0)
    return out


def contains(completions, word: str, case_sensitive: bool = False, **kw) -> list[float]:
    """1.0 if the completion contains `word`, else 0.0."""
    if not case_sensitive:
        word = word.lower()
    return [float(word in (completion_text(c) if case_sensitive else completion_text(c).lower()))
            for c in completions]
