"""A body (transformers model) plus what the task adds: a pooled classification head, or
nothing for causal LMs. Methods wrap `body`; the head is llmtune's own small module."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from llmtune.models.stock_head import stock_classifier

HEAD_FILE = "head.safetensors"
INFO_FILE = "llmtune.json"


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce (batch, seq, dim) to (batch, dim) over real tokens only (right padding)."""
    if how == "cls":
        return hidden[:, 0]
    if how == "last":
        last = mask.sum(dim=1).clamp(min=1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if how == "mean":
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    if how == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    raise ValueError(f"unknown pooling {how!r}")


class TaskModel(nn.Module):
    def __init__(self, body: nn.Module, task: str, *, num_labels: int | None = None,
                 pooling: str = "mean", head_dropout: float = 0.1):
        super().__init__()
        self.body = body
        self.task = task
        self.pooling = pooling
        self.head: nn.Linear | None = None
        if task == "classification":
            hidden = body.config.hidden_size
            self.dropout = nn.Dropout(head_dropout)
            # In the body's dtype: float32 by default, bf16 under "pure bf16" (models/precision.py).
            # No bias where a stock transformers classifier is exactly this head (a decoder with
            # pooling last: models/stock_head.py), so a merged export loads with transformers alone.
            bias = stock_classifier(body.config, pooling) is None
            self.head = nn.Linear(hidden, num_labels, bias=bias, dtype=getattr(body, "dtype", None))

    @property
    def is_causal(self) -> bool:
        return self.head is None

    def forward(self, input_ids, attention_mask, labels=None):
        if self.head is None:
            out = self.body(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                            use_cache=False)
            return out.loss, out.logits
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.head(self.dropout(pool(hidden, attention_mask, self.pooling)))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return loss, logits

    # The head is stored beside whatever the method saves for the body, as plain
    # safetensors (weight, and bias where the head has one) that any tool can read.
    def save_head(self, out_dir: Path) -> None:
        if self.head is None:
            return
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, str(Path(out_dir) / HEAD_FILE))

    def load_head(self, from_dir: Path) -> None:
        if self.head is None:
            return
        from safetensors.torch import load_file

        state = load_file(str(Path(from_dir) / HEAD_FILE))
        if ("bias" in state) != (self.head.bias is not None):
            # A run trained before decoder heads with pooling last lost their bias: build it as saved.
            w = self.head.weight
            self.head = nn.Linear(w.shape[1], w.shape[0], bias="bias" in state, dtype=w.dtype, device=w.device)
        self.head.load_state_dict(state)

    def trainable_parameters(self) -> tuple[int, int]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return trainable, total


def write_info(out_dir: Path, info: dict) -> None:
    (Path(out_dir) / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
