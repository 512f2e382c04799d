"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import math

import torch


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Biases and norm weights are 1-D: decaying them only hurts.
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": params, "weight_decay": decay_rate}
              for params, decay_rate in ((decay, weight_decay), (no_decay, 0.0)) if params]
    if not groups:
        raise ValueError("the method left no trainable parameters")
    # The fused kernel: one pass over all parameters instead of a Python loop over tensors
    # (LoRA has hundreds of small ones), and it can skip a non-finite step on the device.
    return torch.optim.AdamW(groups, lr=lr, fused=supports_fused(decay + no_decay))


def supports_fused(params) -> bool:
    return all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
               for p in params)


def skip_if(optimizer, bad: torch.Tensor | None) -> None:
    """Let a fused optimizer's next step be skipped on the device when `bad` (a 0-dim
    tensor) is true: parameters, moments and step count stay as they were."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    inner.found_inf = None if bad is None else bad.to(torch.float32)


def build_scheduler(optimizer, kind: str, total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return max(0.0, 1.0 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
