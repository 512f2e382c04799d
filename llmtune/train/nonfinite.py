"""Keeping a NaN/inf loss or gradient away from the weights, with or without a host sync.

`every_step` asks the device after every optimizer step (one sync per step) and lets the
loop redo a bad step with the next batches. `log_steps` never waits on the device between
log, eval and checkpoint steps: it hands the fused optimizer a device-side flag that makes
it skip a bad step in place (weights, moments and step count untouched) and counts bad
steps on the device; the loop reads the count when it syncs anyway.
"""

from __future__ import annotations

import torch

from llmtune.train.optim import skip_if


class FiniteGuard:
    def __init__(self, mode: str, device):
        self.mode = mode
        self.device = device
        self._bad = None
        self._count = torch.zeros((), dtype=torch.long, device=device)
        self._first = torch.zeros((), dtype=torch.long, device=device)
        self._window_bad = torch.zeros((), dtype=torch.long, device=device)

    @staticmethod
    def finite_now(loss: torch.Tensor, norm: torch.Tensor | None) -> bool:
        finite = torch.isfinite(loss) if norm is None else torch.isfinite(loss) & torch.isfinite(norm)
        return bool(finite)

    def mark(self, loss, norm, optimizer, step: int, grads_of) -> None:
        """log_steps: flag this step on the device; the optimizer skips it if bad."""
        if norm is None:
            norm = torch.nn.utils.get_total_norm([p.grad for p in grads_of])
        bad = ~(torch.isfinite(loss) & torch.isfinite(norm))
        skip_if(optimizer, bad)
        self._first = torch.where(bad & (self._count == 0), torch.full_like(self._first, step), self._first)
        self._count += bad
        self._window_bad += bad
        self._bad = bad

    def good_part(self, loss: torch.Tensor) -> torch.Tensor:
        """The step's loss for the logging window (0 for a skipped step)."""
        if self._bad is None:
            return loss
        return torch.where(self._bad, torch.zeros_like(loss), loss)

    def good_steps(self, steps: int) -> int:
        if self.mode == "every_step":
            return steps
        bad = int(self._window_bad.item())
        self._window_bad.zero_()
        return steps - bad

    def collect(self) -> tuple[int, int] | None:
        """log_steps: (bad steps since the last call, the first of them), or None."""
        count = int(self._count.item())
        if not count:
            return None
        first = int(self._first.item())
        self._count.zero_()
        self._first.zero_()
        return count, first
