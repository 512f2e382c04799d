"""Dropout that is cheap on a CPU (train.fast_dropout).

On a CPU, torch's dropout draws its mask with `bernoulli_`, one double-precision draw per
element: profiled on the quickstart (MiniLM + LoRA, 2 cores) it was 27% of a training
step, more than all the LoRA matmuls together. This draws 16 random bits per element in
bulk (`randint` over int64, four elements per draw), keeps an element when its bits clear
the threshold, and scales by 1/(1-p) as dropout does; autograd keeps only the boolean mask.

The same distribution (keep probability 1-p, to within 2**-17: p is rounded to a multiple
of 2**-16), from the same torch generator, so a checkpoint's RNG state still replays it
exactly; only the masks themselves differ from torch's. On a GPU torch's own kernel is fast
and is used unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def bulk_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    n = x.numel()
    bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    bits = bits.view(torch.int16)[:n].view(x.shape)
    # Signed 16-bit parts are uniform over [-2**15, 2**15): drop the lowest fraction p.
    keep = bits >= -2**15 + round(p * 2**16)
    # where() saves the boolean mask for the backward and reads it as it is; x * keep would
    # first copy it to a float tensor, in the forward and again in the backward.
    return torch.where(keep, x, 0.0) * (1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return F.dropout(x, self.p, self.training, self.inplace)
        if self.p == 1.0:
            return x * 0.0
        return bulk_dropout(x, self.p)


def use_fast_dropout(model: nn.Module) -> int:
    """Turn every plain nn.Dropout in `model` into a FastDropout (in place; same p, no
    parameters either way, so nothing saved changes). Returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Dropout and module.p > 0:
            module.__class__ = FastDropout
            count += 1
    return count
