"""Label scoring with shared prefixes encoded once.

Few-shot prompts that use the same demonstrations in the same order begin with the same
tokens; re-encoding those for every query is most of an ICL evaluation's cost. Rows are
grouped by their common token prefix (found on the token ids themselves, so nothing is
assumed about templates or tokenizers); each group's prefix runs through the model once,
and its key/value cache is reused for every row of the group. The rows' remaining tokens
are scored in batches of `eval.batch_size` rows; a group's last rows share a batch with
the next group's (each row's prefix cache left-padded to the longest in the batch). The result is the same computation up to float rounding.

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


@dataclass
class CachedPrefix:
    cache: object
    """The key/value cache of a batch of left-padded prefixes."""
    index: int
    """This prefix's row in that batch."""
    width: int
    """The batch's padded prefix length: this prefix fills its last `length` positions."""
    length: int


def encode_prefixes(body, prefixes: list[list[int]], pad_id: int, batch_size: int, device) -> list[CachedPrefix]:
    """Each prefix's key/value cache, `batch_size` prefixes per forward pass, left-padded."""
    import torch

    out = []
    for s in range(0, len(prefixes), batch_size):
        chunk = prefixes[s:s + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, p in enumerate(chunk):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        result = body(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                      use_cache=True, logits_to_keep=1, **{_cache_keyword(body): None})
        cache = getattr(result, "cache", None) or result.past_key_values
        out.extend(CachedPrefix(cache, i, width, len(p)) for i, p in enumerate(chunk))
    return out


def stacked_cache(prefixes: list[CachedPrefix], width: int):
    """One cache for a batch whose rows continue different prefixes: each row's prefix
    keys/values left-padded to `width` (the padding is masked out; rotary positions are
    already inside the cached keys, so padding shifts nothing)."""
    import torch
    from torch.nn.functional import pad

    out = copy.copy(prefixes[0].cache)  # keeps the model's cache class; its layers are replaced below
    out.layers = [copy.copy(layer) for layer in out.layers]
    for i, layer in enumerate(out.layers):
        for name in ("keys", "values"):
            parts = [pad(getattr(p.cache.layers[i], name)[p.index:p.index + 1], (0, 0, width - p.width, 0))
                     for p in prefixes]
            setattr(layer, name, torch.cat(parts, dim=0))
    return out


def suffix_logits(body, prefixes: list[CachedPrefix], batch, keep: int, pad_id: int, device):
    """Logits of each row's last `keep` positions, row i's first `prefixes[i].length` ids
    coming from its cached prefix. Prefixes are left-padded to the widest, suffixes to
    theirs; all padding is masked out and positions count real tokens only, as if each row
    were alone."""
    import torch

    width = max(p.width for p in prefixes)
    suffixes = [r.ids[p.length:] for r, p in zip(batch, prefixes)]
    span = max(len(x) for x in suffixes)
    ids = torch.full((len(batch), span), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width + span), dtype=torch.long)
    for i, (x, p) in enumerate(zip(suffixes, prefixes)):
        ids[i, span - len(x):] = torch.tensor(x)
        mask[i, width - p.length:width] = 1
        mask[i, width + span - len(x):] = 1
    start = torch.tensor([p.length for p in prefixes]).unsqueeze(1)
    positions = start + (mask[:, width:].cumsum(-1) - 1).clamp(min=0)
    cache = stacked_cache(prefixes, width)  # new tensors: the forward appends to them, the prefixes stay clean
    return body(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                use_cache=True, logits_to_keep=keep, **{_cache_keyword(body): cache}).logits[:, -keep:]


def _batches(rows, of_row: dict[int, int], lengths: dict[int, int], batch_size: int) -> list[list[int]]:
    """`batch_size` rows at a time, group by group and by suffix length within a group; a
    group's last rows fill up with the next group's. Not more rows than a plain batch: each
    row holds its own copy of the prefix keys/values, and larger batches measured slower on
    CPU (memory-bound copies, grouped-query heads repeated inside attention)."""
    order = sorted(of_row, key=lambda i: (of_row[i], len(rows[i].ids) - lengths[i]))
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def score_shared(body, rows, *, pad_id: int, batch_size: int, device, add, plain_logprobs, pick) -> tuple[list[int], dict]:
    """Score the rows that share a prefix, passing each batch's (log-probs, slots) to `add`.
    Returns the rows left for the plain path and what was shared."""
    groups, alone = group_rows(rows)
    stats = {"groups": len(groups), "rows_sharing": sum(len(g.rows) for g in groups), "rows": len(rows),
             "tokens_total": sum(len(r.ids) for r in rows),
             "tokens_encoded": sum(len(r.ids) for r in rows) - sum(g.length * (len(g.rows) - 1) for g in groups)}
    if not groups:
        return list(range(len(rows))), stats
    of_row = {i: gi for gi, g in enumerate(groups) for i in g.rows}
    lengths = {i: groups[gi].length for i, gi in of_row.items()}
    try:
        cached = encode_prefixes(body, [rows[g.rows[0]].ids[:g.length] for g in groups], pad_id, batch_size, device)
    except (TypeError, ValueError, RuntimeError, NotImplementedError):
        cached = None  # a model that takes no cache or position ids this way: the plain path

    def run(batch_rows: list[int]):
        batch = [rows[i] for i in batch_rows]
        keep = max(d for r in batch for d, _, _ in r.targets) + 1
        prefixes = [cached[of_row[i]] for i in batch_rows]
        return pick(suffix_logits(body, prefixes, batch, keep, pad_id, device), batch, keep, device)

    if cached is None or not _agrees(run, body, rows, groups, pad_id, device, plain_logprobs):
        stats.update(groups=0, rows_sharing=0, tokens_encoded=stats["tokens_total"], fell_back=True)
        return list(range(len(rows))), stats
    for batch_rows in _batches(rows, of_row, lengths, batch_size):
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
