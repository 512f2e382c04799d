"""Which rows every process trains on at every optimizer step, counted in global batches.

An epoch is a pure function of (seed, epoch) (data/batching.py): its batches, in order. A
*round* is one batch per process (batches i*N .. i*N+N-1 for N processes); an optimizer
step is `grad_accum` rounds and may run on into the next epoch. So under N processes an
epoch is len(batches) // N rounds (the few batches left over are dropped, as DDP must: every
process takes part in every round), steps per epoch, the schedule, `epoch` in the metrics
and resume positions all count global batches, and one process is just N = 1.

Every process knows every process's batches, so the number of loss terms in the whole
step (all micro-batches, all processes) is known on the host before the first forward:
the loss is normalised by it with no communication and no device sync.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmtune.data.batching import epoch_batches
from llmtune.errors import UserError


@dataclass
class StepPlan:
    mine: list[list[int]]
    """This process's micro-batches (row indices), in order."""
    loss_items: int
    """Loss terms in the whole step, every process included."""
    tokens: int
    """Real tokens in the whole step, every process included."""


class DataOrder:
    def __init__(self, lengths: list[int], items: list[int], *, batch_size: int, seed: int,
                 group_by_length: bool, world: int, rank: int):
        self.lengths, self.items = lengths, items
        self.batch_size, self.seed, self.group_by_length = batch_size, seed, group_by_length
        self.world, self.rank = world, rank
        self._epoch: int | None = None
        self._batches: list[list[int]] = []
        self.batches_per_epoch = math.ceil(len(lengths) / batch_size)
        self.rounds_per_epoch = self.batches_per_epoch // world
        if self.rounds_per_epoch == 0:
            raise UserError(f"{len(lengths)} training rows make {self.batches_per_epoch} batch(es) of "
                            f"train.batch_size {batch_size}, fewer than the {world} processes; lower "
                            f"train.batch_size or use fewer processes")

    def total_steps(self, epochs: float, grad_accum: int) -> int:
        return max(1, math.ceil(epochs * self.rounds_per_epoch / grad_accum))

    def batches(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            self._epoch = epoch
            self._batches = epoch_batches(self.lengths, self.batch_size, self.seed, epoch,
                                          group_by_length=self.group_by_length)
        return self._batches

    def take_step(self, position, grad_accum: int) -> StepPlan:
        """The next step's rounds, advancing `position` (epoch, batch) past them."""
        mine, items, tokens = [], 0, 0
        for _ in range(grad_accum):
            if position.batch + self.world > self.rounds_per_epoch * self.world:
                position.epoch += 1
                position.batch = 0
            batches = self.batches(position.epoch)
            round_ = batches[position.batch:position.batch + self.world]
            position.batch += self.world
            mine.append(round_[self.rank])
            for idx in round_:
                items += sum(self.items[i] for i in idx)
                tokens += sum(self.lengths[i] for i in idx)
        return StepPlan(mine, items, tokens)

    def progress(self, position) -> float:
        """Epochs done, in global batches (what `epoch` in metrics.jsonl says)."""
        return position.epoch + position.batch / (self.rounds_per_epoch * self.world)
