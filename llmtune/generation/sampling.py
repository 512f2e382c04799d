"""The next token of each row of a batch, each row with its own parameters: greedy rows take
the most likely token; sampled rows draw from their temperature- and top_p-shaped distribution
with their own seeded generator, so a sampled answer is the same whatever shares its batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from llmtune.generation.params import SamplingParams


def row_generator(params: "SamplingParams", device: "torch.device") -> "torch.Generator | None":
    import torch

    if params.greedy:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(params.seed)
    return gen


def next_tokens(logits: "torch.Tensor", params: list["SamplingParams"],
                generators: list["torch.Generator | None"]) -> "torch.Tensor":
    """`logits` (rows, vocab) of the last position; one token id per row."""
    import torch

    chosen = logits.argmax(dim=-1)
    sampled = [r for r, p in enumerate(params) if not p.greedy]
    if not sampled:
        return chosen
    rows = torch.tensor(sampled, device=logits.device)
    temps = torch.tensor([params[r].temperature for r in sampled], device=logits.device, dtype=torch.float32)
    probs = torch.softmax(logits[rows].float() / temps[:, None], dim=-1)
    top_p = torch.tensor([params[r].top_p for r in sampled], device=logits.device, dtype=torch.float32)
    probs = _nucleus(probs, top_p)
    for i, r in enumerate(sampled):
        chosen[r] = torch.multinomial(probs[i], 1, generator=generators[r])[0]
    return chosen


def _nucleus(probs: "torch.Tensor", top_p: "torch.Tensor") -> "torch.Tensor":
    """Zero every token outside the smallest most-likely set whose mass reaches top_p (the most
    likely token always stays)."""
    import torch

    if bool((top_p >= 1).all()):
        return probs
    ordered, order = probs.sort(dim=-1, descending=True)
    before = ordered.cumsum(dim=-1) - ordered  # mass of the tokens ranked above each one
    drop = before >= top_p[:, None]
    ordered = ordered.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, ordered)
