"""Batches of training pairs for in-batch negatives, and the tensors one batch becomes.

A batch never holds the same text twice: if two rows of one query (it has several
positives) met in a batch, each row's positive would be the other's negative, and the loss
would push the query away from its own answers (sentence-transformers' NO_DUPLICATES batch
sampler keeps the same rule). Rows are drawn from a stream of seeded shuffled passes over
the pairs; a row that shares a text with the batch so far waits for the next batch, ahead
of fresh rows. So every batch is full (unless the pairs hold fewer distinct texts than a
batch), a query with many positives spreads its rows over consecutive batches instead of
ending an epoch with batches of one row (whose loss is zero: nothing to tell apart), and an
epoch is ceil(pairs / batch_size) batches: each row once per epoch on average.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass
class Row:
    query: int
    """Index of the query text in the tokenized texts."""
    positive: int
    negatives: list[int]

    def texts(self) -> set[int]:
        return {self.query, self.positive, *self.negatives}


def plan(rows: list[Row], batch_size: int, seed: int, epochs: float, max_steps: int | None) -> list[list[int]]:
    """Row indices of every step's batch, in order: `max_steps` steps, else enough batches
    for `epochs` passes over the rows."""
    steps = max_steps or max(1, math.ceil(epochs * len(rows) / batch_size))
    waiting: list[int] = []
    fresh: list[int] = []
    passes = 0
    batches = []
    for _ in range(steps):
        batch: list[int] = []
        used: set[int] = set()
        still: list[int] = []
        for i in waiting:
            _offer(rows, i, batch, used, still, batch_size)
        drawn = 0
        while len(batch) < batch_size and drawn <= len(rows):
            if not fresh:
                fresh = list(range(len(rows)))
                random.Random(seed * 1_000_003 + passes).shuffle(fresh)
                fresh.reverse()  # popped from the end
                passes += 1
            _offer(rows, fresh.pop(), batch, used, still, batch_size)
            drawn += 1
        waiting = still
        batches.append(batch)
    return batches


def _offer(rows: list[Row], i: int, batch: list[int], used: set[int], still: list[int], size: int) -> None:
    own = rows[i].texts()
    if len(batch) < size and not own & used:
        batch.append(i)
        used |= own
    else:
        still.append(i)


def pad(rows: list[list[int]], pad_id: int, device):
    """(input_ids, attention_mask) right-padded to the longest row."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device), mask.to(device)
