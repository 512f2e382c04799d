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


def answer_match(completions, answer, labels: list | None = None, partial: float = 0.0, **kw) -> list[float]:
    """1.0 when the reply is the row's `answer` (a column of the prompts file; case, punctuation
    and articles ignored), `partial` when it names the answer among other words but none of the
    other `labels`, else 0.0. A partial credit gives online RL a signal from a model that still
    answers in sentences."""
    import re

    from llmtune.evaluate.metrics import normalize_answer

    others = [normalize_answer(str(x)) for x in labels or []]
    out = []
    for c, gold in zip(completions, answer):
        reply, want = normalize_answer(completion_text(c)), normalize_answer(str(gold))
        words = set(re.findall(r"\w+", reply))
        named = [o for o in others if o and o != want and set(o.split()) <= words]
        if reply == want:
            out.append(1.0)
        elif want and set(want.split()) <= words and not named:
            out.append(float(partial))
        else:
            out.append(0.0)
    return out
