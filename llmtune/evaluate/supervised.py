"""Evaluate a TaskModel on tokenized examples (classification or causal LM)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from llmtune.data.batching import collate, epoch_batches
from llmtune.data.encode import IGNORE
from llmtune.evaluate.metrics import classification_metrics, lm_metrics


@torch.inference_mode()
def evaluate_examples(model, examples: list[dict], *, batch_size: int, pad_id: int,
                      labels: list[str] | None, device=None) -> dict:
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    # Sorted by length: the least padding, and the result does not depend on order.
    batches = epoch_batches([len(e["input_ids"]) for e in examples], batch_size, seed=0, epoch=0,
                            shuffle=False, group_by_length=True)
    preds, golds = [], []
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    total_tokens = torch.zeros((), dtype=torch.long, device=device)
    per_row: list[torch.Tensor] = []  # (loss sum, tokens) of each example: the loss's standard error
    for idx in batches:
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], pad_id).items()}
        _, logits = model(batch["input_ids"], batch["attention_mask"])
        if model.is_causal:
            shift_logits = logits[:, :-1].float()
            shift_labels = batch["labels"][:, 1:]
            losses = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                                     ignore_index=IGNORE, reduction="none").view(shift_labels.shape).double()
            counted = (shift_labels != IGNORE)
            total_loss += losses.sum()
            total_tokens += counted.sum()
            per_row.append(torch.stack([losses.sum(1), counted.sum(1).double()], 1).cpu())
        else:
            preds.append(logits.argmax(-1).cpu())
            golds.append(batch["labels"].cpu())
    model.train(was_training)
    if model.is_causal:
        rows = torch.cat(per_row).tolist() if per_row else []
        return lm_metrics(total_loss.item(), int(total_tokens.item()), [(a, int(b)) for a, b in rows])
    p = torch.cat(preds).tolist() if preds else []
    g = torch.cat(golds).tolist() if golds else []
    return classification_metrics(p, g, labels)


def headline(metrics: dict) -> dict:
    """The scalar metrics worth a log line (no confusion matrix, no per-class table)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
