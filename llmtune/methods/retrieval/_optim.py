"""The optimizer and learning-rate schedule a contrastive run steps with: AdamW with no decay on
biases and norms; linear warmup, then the recipe's decay (linear, cosine or constant)."""

from __future__ import annotations

import math

import torch


def schedule(optimizer, kind: str, total: int, warmup: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, total - warmup)
        if kind == "constant":
            return 1.0
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        return max(0.0, 1 - done)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw(model, lr: float, weight_decay: float):
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]  # biases, norms: no decay
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0})
              if g["params"]]
    return torch.optim.AdamW(groups, lr=lr)
