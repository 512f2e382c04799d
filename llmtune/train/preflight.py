"""Checks on one small batch before the first step, so a run fails (or adapts) at once
instead of at step 2 or, worse, silently.

- Parameters no loss reaches: a forward/backward pass shows which trainable parameters get
  no gradient. Outside the transformer blocks they cannot ever get one (BERT's pooler under
  llmtune's own pooled head, say): they are frozen, so they neither count as trainable nor
  stall DDP ("parameters that were not used in producing loss"). Inside the blocks a
  parameter may just not have been used by this batch (mixture-of-experts routing, a
  method's conditional path): it stays trainable, and DDP is told to look for unused
  parameters, the one case that needs it.
- The chunked loss gives the loss the plain full-logits path gives (else it is turned off,
  with a warning: a model that post-processes its logits in a way llmtune does not know).
- Packing keeps examples apart: a row of two packed examples gives each the logits it gets
  alone (else the run stops: this attention implementation ignores the document mask).

Run in eval mode (no dropout) under a forked RNG: the checks draw no random numbers, so a
run's stream of random numbers, and exact resume, are what they would be without them.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from llmtune.data.batching import collate
from llmtune.errors import UserError


@dataclass
class Preflight:
    frozen: list[str] = field(default_factory=list)
    """Trainable parameters no loss can reach, now frozen."""
    maybe_unused: list[str] = field(default_factory=list)
    """Block parameters this batch did not reach: DDP must look for unused parameters."""
    chunked_loss_ok: bool = True


def run_preflight(model, rows: list[dict], pad_id: int, device, autocast=nullcontext, *, packing: bool) -> Preflight:
    devices = [device] if device.type == "cuda" else []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            result = Preflight()
            batch = _to(collate(rows[:2], pad_id), device)
            result.frozen, result.maybe_unused = _unreached(model, batch, autocast)
            if model.is_causal and model.chunked_loss:
                result.chunked_loss_ok = _chunked_matches_plain(model, batch, autocast)
            if packing:
                _check_packing_isolation(model, rows, pad_id, device, autocast)
            return result
    finally:
        model.train(was_training)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _call(model, batch: dict, labels: bool = True):
    if "position_ids" in batch:
        return model(batch["input_ids"], None, batch["labels"] if labels else None, batch["position_ids"])
    return model(batch["input_ids"], batch["attention_mask"], batch["labels"] if labels else None)


def _unreached(model, batch, autocast) -> tuple[list[str], list[str]]:
    with autocast():
        loss, _ = _call(model, batch)
    loss.float().backward()
    unreached = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    in_blocks = _block_parameter_ids(model)
    frozen, maybe = [], []
    for name, p in unreached:
        if id(p) in in_blocks:
            maybe.append(name)
        else:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen, maybe


def _block_parameter_ids(model) -> set[int]:
    from llmtune.models.layers import transformer_blocks

    try:
        return {id(p) for p in transformer_blocks(model.body).parameters()}
    except ValueError:
        return set()


@torch.no_grad()
def _chunked_matches_plain(model, batch, autocast) -> bool:
    with autocast():
        chunked, _ = _call(model, batch)
        model.chunked_loss = False
        try:
            plain, _ = _call(model, batch)
        finally:
            model.chunked_loss = True
    tolerance = 1e-4 if chunked.dtype == torch.float32 and not _autocasting(autocast) else 2e-2
    return bool(torch.isclose(chunked.float(), plain.float(), rtol=tolerance, atol=tolerance))


def _autocasting(autocast) -> bool:
    return autocast is not nullcontext


@torch.no_grad()
def _check_packing_isolation(model, rows: list[dict], pad_id: int, device, autocast) -> None:
    """rows are packed rows; take one holding two or more examples and compare each example's
    logits inside the row with its logits alone."""
    row = next((r for r in rows if r.get("examples", 1) > 1), None)
    if row is None:
        return
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
    b = starts[1]  # the second example: it would see the first if attention leaked
    second = slice(b, starts[2])
    packed = _to(collate([row], pad_id), device)
    alone = _to(collate([{k: row[k][second] for k in ("input_ids", "labels")}], pad_id), device)
    with autocast():
        _, packed_logits = _call(model, packed, labels=False)
        _, alone_logits = _call(model, alone, labels=False)
    got, want = packed_logits[0, second].float(), alone_logits[0].float()
    if not torch.allclose(got, want, rtol=2e-2, atol=2e-2 if _autocasting(autocast) else 1e-3):
        implementation = getattr(model.body.config, "_attn_implementation", "?")
        raise UserError(f"train.packing: this model's attention ({implementation}) lets packed examples see "
                        f"each other (max logit difference {(got - want).abs().max().item():.3g}); set "
                        f"train.packing: false")
