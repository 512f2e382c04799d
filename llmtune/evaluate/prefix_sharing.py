"""Label scoring with shared prefixes encoded once.

Few-shot prompts that use the same demonstrations in the same order begin with the same
tokens; re-encoding those for every query is most of an ICL evaluation's cost. Rows are
grouped by their common token prefix (found on the token ids themselves, so nothing is
assumed about templates or tokenizers). Each group runs as one sequence: the shared prefix
once, then every row's remaining tokens one after the other, under an attention mask that
lets each row's tokens see the prefix and their own earlier tokens only, with positions
counted as if the row were alone. So a row's logits are those of the row encoded whole, up
to float rounding, and no key/value cache is copied per row (the copies made an earlier,
cache-based version memory-bound on CPU). A large group is cut into parts of about
`SUFFIX_TOKENS_PER_ROW x eval.batch_size` row tokens, each with its own copy of the prefix.

Two guards keep it honest: only models that are plain transformers causal LMs (or peft
models that do not learn prompt tokens) take this path, and before scoring, two rows are
scored both ways; if they differ (an attention implementation that ignores a custom mask,
say), everything is scored the plain way.
"""

from __future__ import annotations

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


SUFFIX_TOKENS_PER_ROW = 64
"""Row tokens per forward pass, per `eval.batch_size` row: bounds a part's attention matrix."""


def _parts(rows, group: PrefixGroup, budget: int) -> list[list[int]]:
    """The group's rows in runs of at most `budget` tokens after the prefix (at least one row each)."""
    parts, current, used = [], [], 0
    for i in sorted(group.rows, key=lambda i: len(rows[i].ids)):
        n = len(rows[i].ids) - group.length
        if current and used + n > budget:
            parts.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    return parts + [current] if current else parts


def tree_logprobs(body, prefix: list[int], batch, device):
    """(log-prob of each target token, its output slot) for rows that all begin with `prefix`,
    from one forward pass over the prefix followed by every row's remaining tokens."""
    import torch

    p = len(prefix)
    ids, positions, spans = list(prefix), list(range(p)), []
    for row in batch:
        rest = row.ids[p:]
        spans.append((len(ids), len(rest)))
        ids += rest
        positions += range(p, p + len(rest))
    n = len(ids)
    allowed = torch.zeros((n, n), dtype=torch.bool)
    allowed[:p, :p] = torch.ones((p, p), dtype=torch.bool).tril()
    for start, length in spans:
        allowed[start:start + length, :p] = True
        allowed[start:start + length, start:start + length] = torch.ones((length, length), dtype=torch.bool).tril()
    dtype = next(body.parameters()).dtype
    # An additive float mask: what eager and SDPA attention both add to their scores as given.
    mask = torch.zeros((1, 1, n, n), dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    # Row position q (counted in the whole row) sits at start + q - p of the sequence.
    flat = [start + (len(row.ids) - 1 - d) - p for row, (start, _) in zip(batch, spans) for d, _, _ in row.targets]
    keep = sorted(set(flat))
    logits = body(input_ids=torch.tensor([ids], device=device), attention_mask=mask.to(device),
                  position_ids=torch.tensor([positions], device=device), use_cache=False,
                  logits_to_keep=torch.tensor(keep, device=device)).logits[0]
    where = {q: i for i, q in enumerate(keep)}
    at = torch.tensor([where[q] for q in flat], device=device)
    tok = torch.tensor([t for row in batch for _, t, _ in row.targets], device=device)
    slot = torch.tensor([o for row in batch for _, _, o in row.targets])
    picked = torch.log_softmax(logits[at].float(), dim=-1)
    return picked.gather(1, tok.unsqueeze(1)).squeeze(1), slot


def score_shared(body, rows, *, pad_id: int, batch_size: int, device, add, plain_logprobs) -> tuple[list[int], dict]:
    """Score the rows that share a prefix, passing each part's (log-probs, slots) to `add`.
    Returns the rows left for the plain path and what was shared."""
    groups, alone = group_rows(rows)
    total = sum(len(r.ids) for r in rows)
    stats = {"groups": len(groups), "rows_sharing": sum(len(g.rows) for g in groups), "rows": len(rows),
             "tokens_total": total, "tokens_encoded": total}
    if not groups:
        return list(range(len(rows))), stats
    budget = SUFFIX_TOKENS_PER_ROW * max(1, batch_size)
    parts = [(g, part) for g in groups for part in _parts(rows, g, budget)]
    stats["forward_passes"] = len(parts)
    stats["tokens_encoded"] = sum(len(r.ids) for i, r in enumerate(rows) if i in set(alone)) + sum(
        g.length + sum(len(rows[i].ids) - g.length for i in part) for g, part in parts)

    def run(group: PrefixGroup, part: list[int]):
        return tree_logprobs(body, rows[group.rows[0]].ids[:group.length], [rows[i] for i in part], device)

    if not _agrees(run, body, rows, groups[0], pad_id, device, plain_logprobs):
        stats.update(groups=0, rows_sharing=0, tokens_encoded=total, forward_passes=0, fell_back=True)
        return list(range(len(rows))), stats
    for group, part in parts:
        add(*run(group, part))
    return alone, stats


def _agrees(run, body, rows, group: PrefixGroup, pad_id: int, device, plain_logprobs) -> bool:
    """The group's first two rows, scored together the shared way and one by one the plain
    way: a model whose attention ignores the mask (an exotic implementation, a wrapper,
    another transformers version) is caught here instead of skewing the scores."""
    import torch

    probe = group.rows[:2]
    try:
        shared, _ = run(group, probe)
    except (AttributeError, TypeError, ValueError, RuntimeError, NotImplementedError, IndexError):
        return False
    plain = torch.cat([plain_logprobs(body, [rows[i]], pad_id, device)[0] for i in probe])
    return shared.shape == plain.shape and bool((shared.float() - plain.float()).abs().max() <= TOLERANCE)
