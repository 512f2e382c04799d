"""A classification run's merged export as a stock `*ForSequenceClassification` folder, where
one reproduces llmtune's head exactly (models/stock_head.py: a decoder with `pooling: last`).

The folder is written, loaded back with AutoModelForSequenceClassification (as a user would)
and scored on sample inputs against the run's model as llmtune evaluates it; only a match to
float tolerance is kept, so the export never claims a fidelity it does not have."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

SAMPLE_TEXTS = ("a short one", "and a longer sentence, so that the sample batch has padding in it")
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 5e-3}
"""Largest |logit difference| accepted, by the body's dtype (op order differs between the two)."""


@dataclass
class StockExport:
    cls: str | None
    """The class written (None: no stock class reproduces the head)."""
    max_abs_diff: float | None
    why_not: str | None


def sample_batch(tok):
    """Right-padded like llmtune's batches (its `last` pooling reads the mask)."""
    side, tok.padding_side = tok.padding_side, "right"
    try:
        enc = tok(list(SAMPLE_TEXTS), padding=True, return_tensors="pt")
    finally:
        tok.padding_side = side
    return enc["input_ids"], enc["attention_mask"]


def reference_logits(model, tok):
    """The run's logits on the sample batch, before the method is merged."""
    import torch

    ids, mask = sample_batch(tok)
    model.eval()
    with torch.inference_mode():
        return model(ids, mask)[1].float()


def write_stock_classifier(model, body, tok, labels: list[str], folder: Path, reference) -> StockExport:
    """Write `body` (merged) + the head as a stock class into `folder` if one scores exactly as
    `reference` (reference_logits before merging); otherwise leave `folder` empty."""
    from llmtune.models.stock_head import stock_classifier, why_not_stock

    cls = stock_classifier(body.config, model.pooling)
    if cls is None:
        return StockExport(None, None, why_not_stock(body.config, model.pooling))
    if model.head.bias is not None:
        return StockExport(None, None, f"this run's head has a bias (trained before llmtune's decoder heads with "
                                       f"pooling last dropped it), which {cls.__name__}'s bias-free score cannot hold")
    _save(cls, body, model.head, tok, labels, folder)
    diff = _check(folder, tok, reference)
    dtype = str(next(body.parameters()).dtype).removeprefix("torch.")
    if diff <= TOLERANCE.get(dtype, 1e-4):
        return StockExport(cls.__name__, diff, None)
    for item in Path(folder).iterdir():  # keep nothing that claims a fidelity it lacks
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    return StockExport(None, diff, f"{cls.__name__} loaded back scored differently from llmtune's model "
                                   f"(max |logit difference| {diff:.2e})")


def _save(cls, body, head, tok, labels: list[str], folder: Path) -> None:
    import torch

    config = copy.deepcopy(body.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.pad_token_id = tok.pad_token_id  # how the class finds each sequence's last real token
    config.architectures = [cls.__name__]
    with torch.device("meta"):  # the layout only; the trained tensors are assigned below
        stock = cls(config)
    state = {f"{stock.base_model_prefix}.{k}": v for k, v in body.state_dict().items()}
    state["score.weight"] = head.weight.detach()
    stock.load_state_dict(state, strict=True, assign=True)
    stock.save_pretrained(folder)


def _check(folder: Path, tok, reference) -> float:
    import torch
    from transformers import AutoModelForSequenceClassification

    ids, mask = sample_batch(tok)
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        logits = loaded(input_ids=ids, attention_mask=mask).logits.float()
    return (logits - reference).abs().max().item()
