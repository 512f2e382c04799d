"""Label scoring with shared prefixes encoded once.

Few-shot prompts that use the same demonstrations in the same order begin with the same
tokens; re-encoding those for every query is most of an ICL evaluation's cost. Rows are
grouped by their common token prefix (found on the token ids themselves, so nothing is
assumed about templates or tokenizers); each group's prefix runs through the model once,
and its key/value cache is reused for every row of the group. The rows' remaining tokens
are scored in batches that may mix groups (each row's prefix cache left-padded to the
longest in the batch), sized by new tokens rather than rows, so that short suffixes still
make large matrix products. The result is the same computation up to float rounding.

Two guards keep it honest: only models that are plain transformers causal LMs (or peft
models that do not learn prompt tokens) take this path, and before scoring, two rows are
scored both ways; if they differ, everything is scored the plain way.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

MIN_SHARED = 16
"""Tokens a group must share: below this the saving does not pay for the bookkeeping."""
TOLERANCE = 1e-3
"""Largest log-probability difference between the two paths accepted by the self-check."""


@dataclass
class PrefixGroup:
    length: int
    """Tokens of the shared prefix (each row's first `length` ids are equal)."""
    rows: list[int]


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _cap(row) -> int:
    """The longest prefix a row can share: every position whose logits score a token stays
    outside it, so at least one token of the row is run after the cached prefix."""
    return len(row.ids) - 1 - max(d for d, _, _ in row.targets)


def group_rows(rows, min_shared: int = MIN_SHARED) -> tuple[list[PrefixGroup], list[int]]:
    """(groups of at least two rows sharing `min_shared`+ tokens, indices of the other rows).

    Rows are sorted by their ids, so rows with a common prefix sit next to each other. A row
    joins the current group when that does not lower the tokens the group saves (prefix
    length times rows beyond the first); otherwise it starts a new group."""
    order = sorted(range(len(rows)), key=lambda i: rows[i].ids)
    groups: list[PrefixGroup] = []
    current: PrefixGroup | None = None
    for i in order:
        if current is not None:
            first = rows[current.rows[0]].ids
            shared = min(_common_prefix(first, rows[i].ids, current.length), _cap(rows[i]))
            n = len(current.rows)
            if shared >= min_shared and shared * n >= current.length * (n - 1):
                current.length = shared
                current.rows.append(i)
                continue
            groups.append(current)
        current = PrefixGroup(_cap(rows[i]), [i])
    if current is not None:
        groups.append(current)
    shared = [g for g in groups if len(g.rows) > 1 and g.length >= min_shared]
    alone = sorted(i for g in groups if g not in shared for i in g.rows)
    return shared, alone


def supports_prefix_cache(body) -> bool:
    """Plain transformers models, or peft models whose forward is the base model's with
    changed weights. Wrappers that add inputs (soft prompts) take the plain path."""
    from transformers import PreTrainedModel

    base = _base_model(body)
    if not isinstance(base, PreTrainedModel):
        return False
    peft_config = getattr(body, "peft_config", None)
    if peft_config:
        return not any(getattr(c, "is_prompt_learning", False) for c in peft_config.values())
    return base is body


def _base_model(body):
    get = getattr(body, "get_base_model", None)
    return get() if callable(get) else body


def _cache_keyword(body) -> str:
    """transformers 5.x renamed `past_key_values` to `cache` (the old name is accepted for a while)."""
    params = inspect.signature(type(_base_model(body)).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def encode_prefix(body, ids: list[int], device):
    import torch

    out = body(input_ids=torch.tensor([ids], device=device), use_cache=True, logits_to_keep=1,
               **{_cache_keyword(body): None})
    return getattr(out, "cache", None) or out.past_key_values


def stacked_cache(prefixes: list[tuple[object, int]], width: int):
    """One cache for a batch whose rows continue different prefixes: each row's prefix
    keys/values left-padded to `width` (the padding is masked out; rotary positions are
    already inside the cached keys, so padding shifts nothing)."""
    import torch
    from torch.nn.functional import pad

    out = copy.deepcopy(prefixes[0][0])  # keeps the model's cache and layer classes
    for i, layer in enumerate(out.layers):
        for name in ("keys", "values"):
            parts = [pad(getattr(c.layers[i], name), (0, 0, width - n, 0)) for c, n in prefixes]
            setattr(layer, name, torch.cat(parts, dim=0))
    return out


def suffix_logits(body, prefixes: list[tuple[object, int]], batch, keep: int, pad_id: int, device):
    """Logits of each row's last `keep` positions, row i's first `prefixes[i][1]` ids coming
    from the cache `prefixes[i][0]`. Prefixes are left-padded to the longest, suffixes to
    theirs; all padding is masked out and positions count real tokens only, as if each row
    were alone."""
    import torch

    lengths = [n for _, n in prefixes]
    width, suffixes = max(lengths), [r.ids[n:] for r, n in zip(batch, lengths)]
    span = max(len(x) for x in suffixes)
    ids = torch.full((len(batch), span), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width + span), dtype=torch.long)
    for i, (x, n) in enumerate(zip(suffixes, lengths)):
        ids[i, span - len(x):] = torch.tensor(x)
        mask[i, width - n:width] = 1
        mask[i, width + span - len(x):] = 1
    start = torch.tensor(lengths).unsqueeze(1)
    positions = start + (mask[:, width:].cumsum(-1) - 1).clamp(min=0)
    cache = stacked_cache(prefixes, width)  # the forward appends to it; the prefixes stay clean
    return body(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                use_cache=True, logits_to_keep=keep, **{_cache_keyword(body): cache}).logits[:, -keep:]


ROWS_PER_BATCH = 8
"""A shared batch holds up to this many times `eval.batch_size` rows, as long as its new
tokens do not exceed those of a plain batch: short suffixes alone would make small, slow
matrix products. Key/value memory can then reach this many times a plain batch's."""


def _batches(rows, members: list[int], lengths: dict[int, int], batch_size: int) -> list[list[int]]:
    """Rows by suffix length, cut so a batch runs about as many new tokens as a plain one."""
    budget = batch_size * max(len(rows[i].ids) for i in members)
    order = sorted(members, key=lambda i: len(rows[i].ids) - lengths[i])
    out, current = [], []
    for i in order:
        width = len(rows[i].ids) - lengths[i]
        if current and ((len(current) + 1) * width > budget or len(current) >= ROWS_PER_BATCH * batch_size):
            out.append(current)
            current = []
        current.append(i)
    return out + ([current] if current else [])


def score_shared(body, rows, *, pad_id: int, batch_size: int, device, add, plain_logprobs, pick) -> tuple[list[int], dict]:
    """Score the rows that share a prefix, passing each batch's (log-probs, slots) to `add`.
    Returns the rows left for the plain path and what was shared."""
    groups, alone = group_rows(rows)
    stats = {"groups": len(groups), "rows_sharing": sum(len(g.rows) for g in groups), "rows": len(rows),
             "tokens_total": sum(len(r.ids) for r in rows),
             "tokens_encoded": sum(len(r.ids) for r in rows) - sum(g.length * (len(g.rows) - 1) for g in groups)}
    if not groups:
        return list(range(len(rows))), stats
    caches = [encode_prefix(body, rows[g.rows[0]].ids[:g.length], device) for g in groups]
    of_row = {i: gi for gi, g in enumerate(groups) for i in g.rows}
    lengths = {i: groups[gi].length for i, gi in of_row.items()}

    def run(batch_rows: list[int]):
        batch = [rows[i] for i in batch_rows]
        keep = max(d for r in batch for d, _, _ in r.targets) + 1
        prefixes = [(caches[of_row[i]], lengths[i]) for i in batch_rows]
        return pick(suffix_logits(body, prefixes, batch, keep, pad_id, device), batch, keep, device)

    if not _agrees(run, body, rows, groups, pad_id, device, plain_logprobs):
        stats.update(groups=0, rows_sharing=0, tokens_encoded=stats["tokens_total"], fell_back=True)
        return list(range(len(rows))), stats
    for batch_rows in _batches(rows, list(of_row), lengths, batch_size):
        add(*run(batch_rows))
    return alone, stats


def _agrees(run, body, rows, groups, pad_id: int, device, plain_logprobs) -> bool:
    """The first row of the first two groups, scored together the shared way and one by
    one the plain way: a model whose cache does not reproduce its own forward (an exotic
    attention, a wrapper, another transformers version) is caught here instead of skewing
    the scores. Two groups, so that prefixes of different lengths share a batch."""
    import torch

    probe = [g.rows[0] for g in groups[:2]]
    try:
        shared, _ = run(probe)
    except (AttributeError, TypeError, ValueError, RuntimeError, NotImplementedError):
        return False
    plain = torch.cat([plain_logprobs(body, [rows[i]], pad_id, device)[0] for i in probe])
    return bool((shared.float() - plain.float()).abs().max() <= TOLERANCE)
