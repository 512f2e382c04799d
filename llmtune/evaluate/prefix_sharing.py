"""Label scoring with shared prefixes encoded once.

Few-shot prompts that use the same demonstrations in the same order begin with the same
tokens; re-encoding those for every query is most of an ICL evaluation's cost. Rows are
grouped by their common token prefix (found on the token ids themselves, so nothing is
assumed about templates or tokenizers); each group's prefix runs through the model once,
and its key/value cache is reused for every row of the group, whose remaining tokens are
scored in batches. The result is the same computation up to float rounding.

Two guards keep it honest: only models that are plain transformers causal LMs (or peft
models that do not learn prompt tokens) take this path, and before scoring, one row is
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


def suffix_logits(body, prefix_cache, prefix_len: int, batch, keep: int, pad_id: int, device):
    """Logits of each row's last `keep` positions, the row's first `prefix_len` ids coming from
    the cache. Suffixes are left-padded; the padding sits between prefix and suffix, masked
    out, and positions count real tokens only, as if each row were alone."""
    import torch

    suffixes = [r.ids[prefix_len:] for r in batch]
    width = max(len(s) for s in suffixes)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, s in enumerate(suffixes):
        ids[i, width - len(s):] = torch.tensor(s)
        mask[i, width - len(s):] = 1
    positions = prefix_len + (mask.cumsum(-1) - 1).clamp(min=0)
    attention = torch.cat([torch.ones((len(batch), prefix_len), dtype=torch.long), mask], dim=1)
    cache = copy.deepcopy(prefix_cache)  # the forward appends to it; the prefix's stays clean
    cache.batch_repeat_interleave(len(batch))
    return body(input_ids=ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device),
                use_cache=True, logits_to_keep=keep, **{_cache_keyword(body): cache}).logits[:, -keep:]


def score_shared(body, rows, *, pad_id: int, batch_size: int, device, add, plain_logprobs, pick) -> tuple[list[int], dict]:
    """Score the rows that share a prefix, passing each batch's (log-probs, slots) to `add`.
    Returns the rows left for the plain path and what was shared."""
    groups, alone = group_rows(rows)
    stats = {"groups": len(groups), "rows_sharing": sum(len(g.rows) for g in groups), "rows": len(rows),
             "tokens_total": sum(len(r.ids) for r in rows),
             "tokens_encoded": sum(len(r.ids) for r in rows) - sum(g.length * (len(g.rows) - 1) for g in groups)}
    if not groups:
        return list(range(len(rows))), stats
    if not _agrees(body, rows, groups[0], pad_id, device, plain_logprobs, pick):
        stats.update(groups=0, rows_sharing=0, tokens_encoded=stats["tokens_total"], fell_back=True)
        return list(range(len(rows))), stats
    for group in groups:
        cache = encode_prefix(body, rows[group.rows[0]].ids[:group.length], device)
        members = sorted(group.rows, key=lambda i: len(rows[i].ids))
        for s in range(0, len(members), batch_size):
            batch = [rows[i] for i in members[s:s + batch_size]]
            keep = max(d for r in batch for d, _, _ in r.targets) + 1
            logits = suffix_logits(body, cache, group.length, batch, keep, pad_id, device)
            add(*pick(logits, batch, keep, device))
    return alone, stats


def _agrees(body, rows, group, pad_id: int, device, plain_logprobs, pick) -> bool:
    """One row scored both ways: a model whose cache does not reproduce its own forward
    (an exotic attention, a wrapper) is caught here instead of skewing the scores."""
    row = rows[group.rows[0]]
    keep = max(d for d, _, _ in row.targets) + 1
    cache = encode_prefix(body, row.ids[:group.length], device)
    shared, _ = pick(suffix_logits(body, cache, group.length, [row], keep, pad_id, device), [row], keep, device)
    plain, _ = plain_logprobs(body, [row], pad_id, device)
    return bool((shared.float() - plain.float()).abs().max() <= TOLERANCE)
