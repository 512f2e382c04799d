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
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if want_b else None
        for start in range(0, hidden.shape[0], rows):
            h = hidden[start:start + rows]
            t = targets[start:start + rows]
            logits = F.linear(h, weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t.unsqueeze(1)).squeeze(1)).sum()
            if not (want_h or want_w or want_b):
                continue
            # d(sum CE)/d logits = softmax - one-hot, computed in place over the logits.
            grad = logits.sub_(lse.unsqueeze(1)).exp_()
            grad[torch.arange(t.shape[0], device=t.device), t] -= 1.0
            grad = grad.to(h.dtype)
            if want_h:
                grad_h[start:start + rows] = grad @ weight.to(grad.dtype)
            if want_w:
                grad_w += (grad.t() @ h).float()
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
