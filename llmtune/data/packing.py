"""Pack several causal-LM examples into each training row, without leakage between them.

Each packed row keeps its examples apart: `position_ids` restart at 0 at every example
(transformers reads the restarts as document boundaries and keeps attention inside each
document), and the first label of every example after the first is IGNORE, so no example
is scored on predicting the next one's first token. The loss over a packed row is therefore
the sum of the losses of the rows it holds (tests/test_loss_paths.py checks it, and the gradient, to tolerance).

Packing is done once per run, best-fit decreasing (the fewest rows, deterministic), before
the epochs shuffle the packed rows: data order stays a pure function of (seed, epoch).
"""

from __future__ import annotations

import bisect

from llmtune.data.encode import IGNORE


def pack_examples(examples: list[dict], capacity: int) -> list[dict]:
    """Rows of at most `capacity` tokens (an example longer than that gets a row alone)."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted: best fit is a bisect
    for i in order:
        need = len(examples[i]["input_ids"])
        at = bisect.bisect_left(free, (need, -1))
        if at < len(free):
            space, b = free.pop(at)
            bins[b].append(i)
            left = space - need
        else:
            bins.append([i])
            b, left = len(bins) - 1, capacity - need
        if left > 0:
            bisect.insort(free, (left, b))
    # Rows in the order of their first example in the data, not by size.
    bins.sort(key=min)
    return [_join([examples[i] for i in sorted(b)]) for b in bins]


def _join(parts: list[dict]) -> dict:
    ids: list = []
    labels: list = []
    positions: list = []
    for n, part in enumerate(parts):
        ids.extend(part["input_ids"])
        part_labels = list(part["labels"])
        if n:
            part_labels[0] = IGNORE  # never predicted from the previous example's last token
        labels.extend(part_labels)
        positions.extend(range(len(part["input_ids"])))
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "examples": len(parts)}
