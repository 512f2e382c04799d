"""The generation entry points over one loaded causal LM.

- `start(requests)`: one batch, step by step (a server's worker batches concurrent requests,
  each with its own parameters and cancel flag, and hands each its deltas);
- `stream(request)`: one request's deltas as they come (chat);
- `complete(requests, batch_size=)`: many requests, sorted by length into batches so that
  little padding is computed (generate, eval, ask).

The engine owns no thread and no queue: whoever holds it calls it from one thread at a time.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from llmtune.generation.decoder import Batch
from llmtune.generation.params import Completion, Delta, Request

if TYPE_CHECKING:
    import torch

_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
FALLBACK_CONTEXT = 2048
"""Context assumed for a model whose config names none."""


def model_positions(config) -> int | None:
    """The positions a transformers config says the model has, if it says."""
    for name in _POSITION_KEYS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def default_stop_ids(body, tokenizer) -> frozenset[int]:
    """End-of-sequence as the tokenizer and the model's generation config name it (chat models
    often list their end-of-turn token there too)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    config = getattr(body, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else list(eos or []))
    return frozenset(ids)


class Engine:
    def __init__(self, body, tokenizer, *, stop_token_ids: Iterable[int] | None = None,
                 context_length: int | None = None):
        self.body = body.eval()
        self.tokenizer = tokenizer
        self.stop_token_ids = frozenset(stop_token_ids) if stop_token_ids is not None else \
            default_stop_ids(body, tokenizer)
        self.context_length = context_length or model_positions(body.config) or FALLBACK_CONTEXT
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        self.device = next(body.parameters()).device
        params = inspect.signature(body.forward).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        # logits for the last position only: the vocabulary projection of a whole prompt is
        # most of a small model's prefill (SmolLM2: 49,152 x 576 per position)
        self._last_only = {"logits_to_keep": 1} if ("logits_to_keep" in params or takes_any) else {}

    def forward(self, ids: "torch.Tensor", mask: "torch.Tensor", positions: "torch.Tensor", cache):
        """The last position's logits (rows, vocab) and the cache, grown by `ids`."""
        import torch

        with torch.inference_mode():
            out = self.body(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                            **self._last_only)
        return out.logits[:, -1, :], out.cache

    def start(self, requests: list[Request]) -> Batch:
        """Decode `requests` together: iterate the batch for each step's deltas."""
        return Batch(self, requests)

    def stream(self, request: Request) -> Iterator[Delta]:
        """One request's deltas (its last one carries finish_reason)."""
        for deltas in self.start([request]):
            yield from deltas

    def complete(self, requests: list[Request], *, batch_size: int = 16,
                 on_batch: Callable[[list[tuple[int, Completion]]], None] | None = None) -> list[Completion]:
        """Every request's completion, in the order given. Requests go into batches of similar
        prompt length; `on_batch` hears each batch's (request index, completion) as it ends."""
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt_ids))
        out: list[Completion | None] = [None] * len(requests)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            batch = self.start([requests[i] for i in idx])
            for _ in batch:
                pass
            done = list(zip(idx, batch.completions()))
            for i, completion in done:
                out[i] = completion
            if on_batch is not None:
                on_batch(done)
        return out  # type: ignore[return-value]
