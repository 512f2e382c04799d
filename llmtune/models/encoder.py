"""Texts -> pooled hidden states, fast.

What makes it fast (the gains of the 2nd and 3rd are measured in docs/embed.md):
- one batched call of the fast tokenizer per chunk, no padding at tokenization;
- rows sorted by their exact token count, so a batch pads to its own longest row and
  most batches of short texts need no padding at all;
- a batch without padding runs without an attention mask, which lets SDPA take its
  fused kernel instead of the masked path;
- torch.inference_mode, bf16 weights on a GPU, and the LM head (if any) never runs.
Rows come back in input order.
"""

from __future__ import annotations

import inspect

from llmtune.device import default_device
from llmtune.errors import UserError

POOLINGS = ("mean", "cls", "last", "max")


def hidden_states_fn(body):
    """f(input_ids, attention_mask or None) -> last hidden states (batch, seq, dim)."""
    from transformers import PreTrainedModel

    if isinstance(body, PreTrainedModel):
        inner = body.base_model  # the bare transformer: a causal LM's vocabulary projection never runs
        extra = {"use_cache": False} if "use_cache" in inspect.signature(inner.forward).parameters else {}

        def run(ids, mask):
            return inner(input_ids=ids, attention_mask=mask, **extra).last_hidden_state

        return run

    def run_wrapped(ids, mask):
        # A method's wrapper (e.g. an unmerged peft model): ask it for its hidden states.
        out = body(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        # Prompt-style methods prepend virtual tokens; the real tokens are the last ones.
        return out.hidden_states[-1][:, -ids.shape[1]:]

    return run_wrapped


def pick_device_and_dtype(precision: str | None):
    import torch

    device = default_device()
    if precision is None:
        return device, None
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type != "cuda":
        # bf16 matmuls on most CPUs are slower than fp32 and lose precision for nothing.
        raise UserError("--precision bf16 needs a GPU; on CPU use fp32 (or auto)")
    return device, {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


class Encoder:
    """Embeds texts with a tokenizer and a body. `precision=None` leaves the body's device
    and dtype as they are (the linear probe embeds with the body exactly as evaluated)."""

    def __init__(self, tokenizer, body, *, pooling: str = "mean", normalize: bool = False,
                 max_length: int = 512, truncation_side: str = "right", batch_size: int = 32,
                 precision: str | None = "auto", batch_tokens: int | None = None):
        if pooling not in POOLINGS:
            raise UserError(f"pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        if batch_size < 1 or max_length < 1 or (batch_tokens is not None and batch_tokens < 1):
            raise UserError("batch size, batch tokens and max length must be at least 1")
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.truncation_side = truncation_side
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        """At most this many tokens (rows x padded width) per forward pass, if set: a batch of
        long rows is cut shorter, since the pass's activation memory grows with its tokens."""
        device, dtype = pick_device_and_dtype(precision)
        if dtype is not None:
            body = body.to(device=device, dtype=dtype)
        self.device = next(body.parameters()).device
        self.body = body.eval()
        self._hidden = hidden_states_fn(body)
        pad = tokenizer.pad_token_id
        self.pad_id = 0 if pad is None else pad
        self.truncated = 0
        """Texts cut to max_length so far."""

    @property
    def dim(self) -> int:
        return self.body.config.hidden_size

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        tok = self.tokenizer
        tok.truncation_side = self.truncation_side
        ids = tok(texts, truncation=False, verbose=False, return_attention_mask=False,
                  return_token_type_ids=False)["input_ids"]
        # Tokenize once without truncation to count the long rows; only those are
        # tokenized again with truncation (which keeps the special tokens).
        long = [i for i, x in enumerate(ids) if len(x) > self.max_length]
        if long:
            self.truncated += len(long)
            cut = tok([texts[i] for i in long], truncation=True, max_length=self.max_length,
                      return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            for i, x in zip(long, cut):
                ids[i] = x
        return ids

    def embed(self, texts: list[str]):
        """(len(texts), dim) float32 numpy array, rows in the order of `texts`."""
        return self.embed_ids(self.tokenize(list(texts))).numpy()

    def embed_ids(self, ids: list[list[int]], on_batch=None):
        """(len(ids), dim) float32 CPU tensor for already tokenized rows, in input order.
        `on_batch(indices)`, if given, is called after each batch with the rows it embedded."""
        import torch
        from torch.nn import functional as F

        from llmtune.models.task_model import pool

        # A text with no tokens (an empty line, for a tokenizer that adds no special
        # tokens) has nothing to embed: its row stays a zero vector.
        out = torch.zeros((len(ids), self.dim), dtype=torch.float32)
        lengths = [len(x) for x in ids]
        # Longest first: a batch that does not fit on the device fails at once, not at the end.
        order = sorted((i for i in range(len(ids)) if lengths[i]), key=lengths.__getitem__, reverse=True)
        with torch.inference_mode():
            for idx in self._batches(order, lengths):
                input_ids, mask = _pad([ids[i] for i in idx], [lengths[i] for i in idx], self.pad_id)
                hidden = self._hidden(input_ids.to(self.device), None if mask is None else mask.to(self.device))
                if mask is None:
                    mask = torch.ones(input_ids.shape, dtype=torch.long)
                vecs = pool(hidden.float(), mask.to(self.device), self.pooling)
                if self.normalize:
                    vecs = F.normalize(vecs, dim=-1)
                out[torch.tensor(idx)] = vecs.cpu()
                if on_batch is not None:
                    on_batch(idx)
        return out

    def _batches(self, order: list[int], lengths: list[int]):
        """`order` (longest first) in consecutive batches of at most `batch_size` rows and, if
        set, `batch_tokens` tokens: a batch pads to its first row's length."""
        start = 0
        while start < len(order):
            rows = self.batch_size
            if self.batch_tokens is not None:
                rows = max(1, min(rows, self.batch_tokens // lengths[order[start]]))
            yield order[start:start + rows]
            start += rows


def _pad(rows: list[list[int]], lengths: list[int], pad_id: int):
    """(input_ids, attention_mask) right-padded to the longest row; mask None if no padding."""
    import torch

    width = max(lengths)
    if min(lengths) == width:
        return torch.tensor(rows, dtype=torch.long), None
    input_ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long)
    mask = (torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()
    return input_ids, mask
