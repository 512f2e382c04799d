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


class LoopStop:
    """A transformers stopping criterion: a row is done once its generated tokens (those
    after `prompt_width`) contain a repeated `window`-token span ending at the last token."""

    def __init__(self, prompt_width: int, window: int = WINDOW):
        self.prompt_width, self.window = prompt_width, window

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated = input_ids[:, self.prompt_width:]
        w = self.window
        if generated.shape[1] <= w:
            return done
        last = generated[:, -w:]
        # every earlier window of the generated part, compared with the last one
        earlier = generated[:, :-1].unfold(1, w, 1)  # (batch, n_windows, w)
        return (earlier == last[:, None, :]).all(-1).any(-1)
