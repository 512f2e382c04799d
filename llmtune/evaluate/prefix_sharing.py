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
"""Row tokens per tree, per `eval.batch_size` row: bounds a tree's attention matrix."""
FORWARD_TOKENS_PER_ROW = 192
"""Tokens per forward pass (all its trees, padding included), per `eval.batch_size` row:
about what a plain batch of few-shot prompts holds."""


@dataclass
class Tree:
    """One group's prefix and some of its rows, laid out as one sequence."""
    ids: list[int]
    positions: list[int]
    allowed: object
    """(n, n) bool tensor: which tokens each token may attend to."""
    kept: int
    """The last `kept` tokens are those whose logits score a target."""
    target_at: list[int]
    """Per target of the rows (in order), its index among the last `kept` tokens."""


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


def build_tree(prefix: list[int], batch) -> Tree:
    """The prefix, then every row's remaining tokens; each row's tokens see the prefix and
    their own earlier tokens, at the positions they have in the row alone. Attention is
    given by the mask and positions by position ids, so the order of tokens in the sequence
    is free: the tokens whose logits are needed go last, and `logits_to_keep` takes them."""
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
    # Row position q (counted in the whole row) sits at start + q - p of the sequence.
    flat = [start + (len(row.ids) - 1 - d) - p for row, (start, _) in zip(batch, spans) for d, _, _ in row.targets]
    keep = sorted(set(flat))
    kept = set(keep)
    order = [i for i in range(n) if i not in kept] + keep
    where = {q: j for j, q in enumerate(keep)}
    index = torch.tensor(order)
    return Tree([ids[i] for i in order], [positions[i] for i in order], allowed[index][:, index], len(keep),
                [where[q] for q in flat])


def tree_logprobs(body, trees: list[Tree], batch, pad_id: int, device):
    """(log-prob of each target token, its output slot) for the rows of `trees` (`batch`: the
    rows in tree order), from one forward pass; each tree is a row of the batch, its kept
    tokens right-aligned and padding in front of them (masked out both ways)."""
    import torch

    width = max(len(t.ids) for t in trees)
    keep = max(t.kept for t in trees)
    ids = torch.full((len(trees), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(trees), width), dtype=torch.long)
    allowed = torch.zeros((len(trees), 1, width, width), dtype=torch.bool)
    at = []
    for b, t in enumerate(trees):
        head = len(t.ids) - t.kept
        # Sequence slot of each tree token: its first `head` tokens at the start, the kept ones at the end.
        slots = torch.cat([torch.arange(head), torch.arange(width - t.kept, width)])
        ids[b, slots] = torch.tensor(t.ids)
        positions[b, slots] = torch.tensor(t.positions)
        allowed[b, 0, slots.unsqueeze(1), slots.unsqueeze(0)] = t.allowed
        at += [(b, keep - t.kept + j) for j in t.target_at]
    dtype = next(body.parameters()).dtype
    # An additive float mask: what eager and SDPA attention both add to their scores as given.
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    logits = body(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                  use_cache=False, logits_to_keep=keep).logits[:, -keep:]
    b_i = torch.tensor([b for b, _ in at], device=device)
    k_i = torch.tensor([k for _, k in at], device=device)
    tok = torch.tensor([t for row in batch for _, t, _ in row.targets], device=device)
    slot = torch.tensor([o for row in batch for _, _, o in row.targets])
    picked = torch.log_softmax(logits[b_i, k_i].float(), dim=-1)
    return picked.gather(1, tok.unsqueeze(1)).squeeze(1), slot


def _forwards(trees: list[tuple[Tree, list[int]]], budget: int) -> list[list[tuple[Tree, list[int]]]]:
    """Trees in forward passes of at most `budget` tokens, padding included (one tree at least)."""
    out, current, width = [], [], 0
    for item in sorted(trees, key=lambda x: len(x[0].ids)):
        w = max(width, len(item[0].ids))
        if current and w * (len(current) + 1) > budget:
            out.append(current)
            current, w = [], len(item[0].ids)
        current.append(item)
        width = w
    return out + [current] if current else out


def score_shared(body, rows, *, pad_id: int, batch_size: int, device, add, plain_logprobs) -> tuple[list[int], dict]:
    """Score the rows that share a prefix, passing each pass's (log-probs, slots) to `add`.
    Returns the rows left for the plain path and what was shared."""
    groups, alone = group_rows(rows)
    total = sum(len(r.ids) for r in rows)
    stats = {"groups": len(groups), "rows_sharing": sum(len(g.rows) for g in groups), "rows": len(rows),
             "tokens_total": total, "tokens_encoded": total}
    if not groups:
        return list(range(len(rows))), stats
    budget = SUFFIX_TOKENS_PER_ROW * max(1, batch_size)

    def tree(group: PrefixGroup, part: list[int]) -> tuple[Tree, list[int]]:
        return build_tree(rows[group.rows[0]].ids[:group.length], [rows[i] for i in part]), part

    def run(items: list[tuple[Tree, list[int]]]):
        return tree_logprobs(body, [t for t, _ in items], [rows[i] for _, part in items for i in part], pad_id, device)

    probe = [tree(g, g.rows[:2 - k]) for k, g in enumerate(groups[:2])]  # 2 rows of one group, 1 of the next
    if not _agrees(run, probe, body, rows, pad_id, device, plain_logprobs):
        stats.update(groups=0, rows_sharing=0, forward_passes=0, fell_back=True)
        return list(range(len(rows))), stats
    passes = _forwards([tree(g, part) for g in groups for part in _parts(rows, g, budget)],
                       FORWARD_TOKENS_PER_ROW * max(1, batch_size))
    stats["forward_passes"] = len(passes)
    stats["tokens_encoded"] = sum(len(rows[i].ids) for i in alone) + sum(len(t.ids) for p in passes for t, _ in p)
    for items in passes:
        add(*run(items))
    return alone, stats


def _agrees(run, probe, body, rows, pad_id: int, device, plain_logprobs) -> bool:
    """A few rows (two of the first group, one of the second) scored together the shared way
    and one by one the plain way: a model whose attention ignores the mask (an exotic
    implementation, a wrapper, another transformers version) is caught here instead of
    skewing the scores."""
    import torch

    try:
        shared, _ = run(probe)
    except (AttributeError, TypeError, ValueError, RuntimeError, NotImplementedError, IndexError):
        return False
    plain = torch.cat([plain_logprobs(body, [rows[i]], pad_id, device)[0] for _, part in probe for i in part])
    return shared.shape == plain.shape and bool((shared.float() - plain.float()).abs().max() <= TOLERANCE)
