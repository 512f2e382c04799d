"""A body (transformers model) plus what the task adds: a pooled classification head, or
nothing for causal LMs. Methods wrap `body`; the head is llmtune's own small module."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from llmtune.data.encode import IGNORE
from llmtune.models.stock_head import stock_classifier

HEAD_FILE = "head.safetensors"
# Config fields of models that transform the logits after the output layer (soft-capping,
# scaling): the chunked loss projects hidden states itself, so it would skip that step.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
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

    loss_reduction: str = "mean"
    """`mean` (what evaluation and the trl glue expect: the model's own mean loss) or `sum`:
    the sum of the loss terms, which llmtune's loop divides by the loss tokens of the whole
    optimizer step (every micro-batch, every process)."""
    chunked_loss: bool = False
    """With `sum` on a causal LM: project only labelled positions, a chunk at a time
    (models/chunked_loss.py), instead of the full logits."""

    def forward(self, input_ids, attention_mask, labels=None, position_ids=None):
        if self.head is None:
            return self._causal(input_ids, attention_mask, labels, position_ids)
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.head(self.dropout(pool(hidden, attention_mask, self.pooling)))
        loss = F.cross_entropy(logits.float(), labels, reduction=self.loss_reduction) if labels is not None else None
        return loss, logits

    def _causal(self, input_ids, attention_mask, labels, position_ids):
        extra = {"use_cache": False} if position_ids is None else {"use_cache": False, "position_ids": position_ids}
        if labels is None or self.loss_reduction == "mean":
            out = self.body(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **extra)
            return out.loss, out.logits
        if not (self.chunked_loss and self.can_chunk_loss):
            logits = self.body(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                   ignore_index=IGNORE, reduction="sum")
            return loss, logits
        from llmtune.models.chunked_loss import chunked_cross_entropy_sum, labelled_positions

        output_layer = self.body.get_output_embeddings()
        hidden = self._final_hidden(output_layer, input_ids, attention_mask, extra)
        # A soft prompt puts virtual positions in front: the real ones are the last seq_len.
        h, targets = labelled_positions(hidden[:, -input_ids.shape[1]:], labels, IGNORE)
        return chunked_cross_entropy_sum(output_layer, h, targets, self.body.config.vocab_size), None

    @property
    def can_chunk_loss(self) -> bool:
        config = self.body.config
        return self.head is None and not any(getattr(config, k, None) for k in _LOGIT_TRANSFORMS)

    def _final_hidden(self, output_layer, input_ids, attention_mask, extra) -> torch.Tensor:
        """The hidden states the output layer would project: caught on their way in, and the
        layer handed an empty slice instead, so the body never computes the full logits."""
        caught = {}

        def catch(_module, args):
            caught["hidden"] = args[0]
            return (args[0][..., :0, :],)

        handle = output_layer.register_forward_pre_hook(catch)
        try:
            self.body(input_ids=input_ids, attention_mask=attention_mask, **extra)
        finally:
            handle.remove()
        if "hidden" not in caught:
            raise RuntimeError(f"{type(self.body).__name__} did not call its output layer; "
                               f"set train.chunked_loss: false")
        return caught["hidden"]

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


def init_head_from_words(model: TaskModel, tok, words: list[str], output_rows) -> list[int]:
    """Start each label's row of the head as the output embedding of its word's first token
    (after a space, as it would follow a prompt), so the untrained classifier scores as the
    causal LM would rank those words next. `output_rows(ids)`: those rows of the LM's output
    layer. Returns the token ids used."""
    ids = []
    for word in words:
        found = tok(" " + word.strip(), add_special_tokens=False)["input_ids"]
        if not found:
            raise ValueError(f"label word {word!r} has no tokens")
        ids.append(found[0])
    if len(set(ids)) < len(ids):
        raise ValueError(f"label words {words} start with the same token; give them distinct first tokens "
                         f"(eval.verbalizers)")
    with torch.no_grad():
        model.head.weight.copy_(output_rows(ids).to(model.head.weight.dtype))
        if model.head.bias is not None:
            model.head.bias.zero_()
    return ids


def write_info(out_dir: Path, info: dict) -> None:
    (Path(out_dir) / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
