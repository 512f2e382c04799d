"""One batch of requests decoded together, one token per step, with a KV cache.

Prompts are left-padded (a decoder continues from the last position, so every prompt must end
there), positions count real tokens only (as transformers' generate() numbers them), and the
prefill computes logits for the last position alone. A request that finishes (stop token,
stop string, loop, its token limit or its cancel flag) leaves the batch at once: its rows are
dropped from the cache, so the others do not carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from llmtune.generation.loops import LoopWatch
from llmtune.generation.params import (CANCELLED, LENGTH, STOP, BadParameter, Completion, Delta, PromptTooLong,
                                      Request)
from llmtune.generation.text import TextStream

if TYPE_CHECKING:
    from llmtune.generation.engine import Engine


@dataclass(eq=False)  # rows compare by identity
class _Row:
    index: int
    request: Request
    limit: int
    stream: TextStream
    loops: LoopWatch | None
    generator: object
    ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None

    def take(self, token: int, stop_ids: frozenset[int]) -> Delta:
        """Add one generated token; the text it releases and, if it ended the answer, why."""
        if token in stop_ids:
            return self._end(STOP, self._release(self.loops.flush() if self.loops else []))
        self.ids.append(token)
        released = self.loops.push(token) if self.loops else [token]
        text = self._release(released)
        if self.loops is not None and self.loops.looped:
            self.ids = list(self.loops.ids)
            return self._end(STOP, text)
        if self.stream.stopped:
            return self._end(STOP, text)
        if len(self.ids) >= self.limit:
            return self._end(LENGTH, text + self._release(self.loops.flush() if self.loops else []))
        return Delta(self.index, text)

    def cancel(self) -> Delta:
        return self._end(CANCELLED, self._release(self.loops.flush() if self.loops else []))

    def _release(self, tokens: list[int]) -> str:
        return "".join(self.stream.add(t) for t in tokens if not self.stream.stopped)

    def _end(self, reason: str, text: str) -> Delta:
        self.finish_reason = reason
        return Delta(self.index, text + self.stream.finish(), reason)

    def completion(self) -> Completion:
        return Completion(self.stream.text, self.ids, self.finish_reason or CANCELLED,
                          len(self.request.prompt_ids))


class Batch:
    """Iterate for the deltas of each step (a list, one per request that moved); after the
    iteration, `completions()` in the order the requests were given."""

    def __init__(self, engine: "Engine", requests: list[Request]):
        from llmtune.generation.sampling import row_generator

        self.engine = engine
        self.rows = []
        for i, req in enumerate(requests):
            n = len(req.prompt_ids)
            if n == 0:
                raise BadParameter("prompt", "is empty: a model needs at least one token to continue from")
            if n >= engine.context_length:
                raise PromptTooLong(n, engine.context_length)
            p = req.params
            self.rows.append(_Row(i, req, min(p.max_new_tokens, engine.context_length - n),
                                  TextStream(engine.tokenizer, p.stop), LoopWatch() if p.stop_loops else None,
                                  row_generator(p, engine.device)))

    def completions(self) -> list[Completion]:
        return [r.completion() for r in self.rows]

    def __iter__(self) -> Iterator[list[Delta]]:
        import torch

        from llmtune.generation.sampling import next_tokens

        active = self._drop_cancelled(self.rows)
        if (cancelled := [r.cancel() for r in self.rows if r not in active]):
            yield cancelled
        if not active:
            return
        ids, mask = self._left_padded([r.request.prompt_ids for r in active])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits, cache = self.engine.forward(ids, mask, positions, None)
        last = positions[:, -1]
        while True:
            tokens = next_tokens(logits, [r.request.params for r in active], [r.generator for r in active])
            yield [r.take(t, self.engine.stop_token_ids) for r, t in zip(active, tokens.tolist())]
            still = [i for i, r in enumerate(active) if r.finish_reason is None]
            going = self._drop_cancelled([active[i] for i in still])
            if len(going) < len(still):
                yield [r.cancel() for r in (active[i] for i in still) if r not in going]
            keep = [i for i in still if active[i] in going]
            if not keep:
                return
            if len(keep) < len(active):
                index = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(index)
                mask, last, tokens = mask[index], last[index], tokens[index]
                active = [active[i] for i in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            last = last + 1
            logits, cache = self.engine.forward(tokens[:, None], mask, last[:, None], cache)

    @staticmethod
    def _drop_cancelled(rows: list[_Row]) -> list[_Row]:
        return [r for r in rows if r.request.cancel is None or not r.request.cancel.is_set()]

    def _left_padded(self, prompts: list[list[int]]):
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.engine.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p):] = 1
        return ids.to(self.engine.device), mask.to(self.engine.device)
