"""Stop a greedy answer that has started to repeat itself, and cut the repeat off.

Greedy decoding of a small model often falls into a loop ("The answer is: The answer is:
..."), and once it has, it stays there until the token limit. A loop shows as a window of
the last `window` generated tokens that already occurred earlier in the answer. Only the
generated tokens are looked at, never the prompt, so an answer may quote its sources
freely (transformers' repetition_penalty and no_repeat_ngram_size count the prompt too,
which would keep an answer from quoting them).
"""

from __future__ import annotations

WINDOW = 12


def first_repeat(ids: list[int], window: int = WINDOW) -> int | None:
    """Where the first repetition of an earlier `window`-token span starts, or None."""
    seen: set[tuple[int, ...]] = set()
    for start in range(len(ids) - window + 1):
        span = tuple(ids[start:start + window])
        if span in seen:
            return start
        seen.add(span)
    return None


def cut_loop(ids: list[int], window: int = WINDOW) -> list[int]:
    """`ids` up to where they begin to repeat an earlier span (all of them if they never do).
    The cut keeps the first occurrence: the repeated span's first copy stays in the answer."""
    at = first_repeat(ids, window)
    return ids if at is None else ids[:at]


class LoopWatch:
    """The same rule token by token, for an answer being streamed.

    A repeat found at the newest token starts `window - 1` tokens back, so those last tokens
    may still be cut: they are held here and released only once they can no longer be part of
    a repeat. What `push` and `flush` release is exactly `cut_loop` of all tokens pushed."""

    def __init__(self, window: int = WINDOW):
        self.window = window
        self.ids: list[int] = []
        self.seen: set[tuple[int, ...]] = set()
        self.released = 0
        self.looped = False

    def push(self, token_id: int) -> list[int]:
        """Take one generated token; return the tokens now safe to show. After a loop is
        found (`looped`), nothing more is released."""
        if self.looped:
            return []
        self.ids.append(token_id)
        if len(self.ids) >= self.window:
            span = tuple(self.ids[-self.window:])
            if span in self.seen:
                self.looped = True
                del self.ids[len(self.ids) - self.window:]
                return self._release(len(self.ids))
            self.seen.add(span)
        return self._release(len(self.ids) - self.window + 1)

    def flush(self) -> list[int]:
        """The held tokens, once the answer ended another way."""
        return [] if self.looped else self._release(len(self.ids))

    def _release(self, upto: int) -> list[int]:
        out = self.ids[self.released:max(upto, self.released)]
        self.released += len(out)
        return out
