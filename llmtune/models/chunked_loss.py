"""Causal-LM cross-entropy that never holds the full-vocabulary float32 logits.

The plain path projects every position of every row onto the vocabulary, upcasts the
(batch, seq, vocab) logits to float32 and then ignores the prompt and padding positions.
Here only the positions that carry a label are projected, a chunk at a time, and for a
plain `nn.Linear` output layer the gradient is formed chunk by chunk in the forward pass
(so no chunk's logits outlive it; memory holds one chunk of logits, whatever the batch).
Any other output module (a LoRA-wrapped `lm_head`, say) is run per chunk under activation
checkpointing instead: same result, one extra projection.

Both return the SUM of the token losses; the caller divides by the number of loss tokens of
the whole optimizer step (see train/loop.py).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LOGITS_PER_CHUNK = 1 << 25
"""Elements of one chunk's logits (128 MiB in float32)."""


def chunk_rows(vocab: int) -> int:
    return max(1, LOGITS_PER_CHUNK // max(vocab, 1))


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ W.T + b, target_i), the gradient formed during the forward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, rows):
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = None  # float32, written by the first chunk (no zero-filled pass first)
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if want_b else None
        space = _workspace(min(rows, hidden.shape[0]), weight.shape[0], hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h = hidden[start:start + rows]
            t = targets[start:start + rows]
            logits = _project(h, weight, bias, None if space is None else space[:h.shape[0]])
            total += _softmax_grad_(logits, t)
            if not (want_h or want_w or want_b):
                continue
            grad = logits.to(h.dtype)  # d(sum CE)/d logits, now in the logits' place
            if want_h:
                grad_h[start:start + rows] = grad @ weight.to(grad.dtype)
            if want_w:
                part = grad.t() @ h
                grad_w = part.float() if grad_w is None else grad_w.add_(part)
            if want_b:
                grad_b += grad.float().sum(0)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.wants = (want_h, want_w, want_b)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = iter(ctx.saved_tensors)
        out = []
        for want, dtype in zip(ctx.wants, ctx.dtypes):
            out.append((next(saved) * grad_out).to(dtype) if want else None)
        return out[0], out[1], out[2], None, None


def _project(h: torch.Tensor, weight: torch.Tensor, bias, out: torch.Tensor | None) -> torch.Tensor:
    """float32 logits of one chunk, written into `out` when the GEMM can write there directly."""
    if out is None or h.dtype != torch.float32 or weight.dtype != torch.float32:
        return F.linear(h, weight, bias).float()
    if bias is None:
        return torch.mm(h, weight.t(), out=out)
    return torch.addmm(bias, h, weight.t(), out=out)


def _softmax_grad_(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The chunk's summed cross-entropy; `logits` is overwritten with its gradient, softmax
    minus one-hot. Every pass works in place: `torch.logsumexp` writes two temporaries the
    size of the logits (its subtract and exp), and on a CPU those passes over fresh memory
    took ~36 ms of a 620 ms full-finetuning step (profiled); in place, the step is 1.08x
    faster (docs/performance.md)."""
    picked = logits.gather(1, targets.unsqueeze(1))
    peak = logits.amax(dim=1, keepdim=True)
    logits.sub_(peak).exp_()
    norm = logits.sum(dim=1, keepdim=True)
    loss = (norm.log() + peak - picked).sum()
    logits.div_(norm)
    logits[torch.arange(targets.shape[0], device=targets.device), targets] -= 1.0
    return loss


_WORKSPACES: dict = {}


def release_workspaces() -> None:
    """Hand the kept chunk buffers back (up to one chunk, 128 MiB, per vocabulary size); the
    training loop calls it when a run ends."""
    _WORKSPACES.clear()


def _workspace(rows: int, vocab: int, device: torch.device) -> torch.Tensor | None:
    """One float32 chunk of logits on a CPU, kept between steps (see _softmax_grad_); on an
    accelerator its caching allocator already reuses the memory."""
    if device.type != "cpu":
        return None
    space = _WORKSPACES.get(vocab)
    if space is None or space.shape[0] < rows:
        space = _WORKSPACES[vocab] = torch.empty(rows, vocab, dtype=torch.float32)
    return space


def _checkpointed_sum(module: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, rows: int) -> torch.Tensor:
    from torch.utils.checkpoint import checkpoint

    def piece(h, t):
        return F.cross_entropy(module(h).float(), t, reduction="sum")

    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):
        total = total + checkpoint(piece, hidden[start:start + rows], targets[start:start + rows],
                                   use_reentrant=False)
    return total


def labelled_positions(hidden: torch.Tensor, labels: torch.Tensor, ignore: int):
    """(hidden states that predict a label, those labels): position t predicts label t+1."""
    shifted = labels[:, 1:]
    keep = shifted != ignore
    return hidden[:, :-1][keep], shifted[keep]


def chunked_cross_entropy_sum(output_layer: nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                              vocab: int) -> torch.Tensor:
    """Summed CE of `output_layer(hidden)` against `targets`; hidden is (n, dim)."""
    rows = chunk_rows(vocab)
    if hidden.shape[0] == 0:
        # No labelled position: a zero that still depends on the output layer, so every
        # trainable parameter gets a (zero) gradient and DDP's reducer is not left waiting.
        return sum(p.sum() * 0.0 for p in output_layer.parameters()) + hidden.sum() * 0.0
    if type(output_layer) is nn.Linear:
        return _LinearCrossEntropy.apply(hidden, output_layer.weight, output_layer.bias, targets, rows)
    return _checkpointed_sum(output_layer, hidden, targets, rows)
