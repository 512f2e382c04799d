"""Batches of similar length, padded to their own longest sequence (never to max length)."""

from __future__ import annotations

import random

import torch

from llmtune.data.encode import IGNORE


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                  group_by_length: bool = True) -> list[list[int]]:
    """The batches of one epoch, deterministic in (seed, epoch) so a resumed run replays them."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    if shuffle:
        rng.shuffle(order)
    if group_by_length:
        # Sort within large random windows: batches hold similar lengths, yet every epoch
        # still mixes lengths across the run.
        window = batch_size * 64
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s:s + window], key=lambda j: lengths[j])]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if shuffle and group_by_length:
        rng.shuffle(batches)
    return batches


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest example. Packed rows (see packing.py) carry `position_ids`; their
    padding gets positions counting from 0 again, which makes it a document of its own that
    no real token attends to, so packed batches need no attention mask."""
    width = max(len(e["input_ids"]) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    has_seq_labels = "labels" in examples[0]
    packed = "position_ids" in examples[0]
    labels = torch.full((n, width), IGNORE, dtype=torch.long) if has_seq_labels else None
    positions = torch.arange(width).repeat(n, 1) if packed else None
    for i, e in enumerate(examples):
        k = len(e["input_ids"])
        input_ids[i, :k] = torch.tensor(e["input_ids"])
        mask[i, :k] = 1
        if labels is not None:
            labels[i, :k] = torch.tensor(e["labels"])
        if positions is not None:
            positions[i, :k] = torch.tensor(e["position_ids"])
            positions[i, k:] = torch.arange(width - k)
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if has_seq_labels:
        batch["labels"] = labels
    elif "label" in examples[0]:
        batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=torch.long)
    if packed:
        batch["position_ids"] = positions
    return batch


def loss_items(example: dict) -> int:
    """How many terms an example adds to the loss: one for a classification example, and
    for a causal LM the labelled positions a token predicts (all but the first)."""
    labels = example.get("labels")
    if labels is None:
        return 1
    return sum(1 for y in labels[1:] if y != IGNORE)
