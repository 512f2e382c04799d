"""In-context learning: pick demonstrations for each query and build prompts that fit.

Selection returns, per query, pool indices ranked by relevance (nearest first, or in the
order drawn). A prompt that is over its token budget drops the lowest-ranked
demonstrations first; a query too long on its own loses its start (the end, which holds
the answer cue, stays).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llmtune.errors import UserError


def dedupe_pool(pool: list) -> list:
    """Distinct rows by text, first occurrence kept: k demonstrations are k different texts."""
    seen, out = set(), []
    for row in pool:
        if row.key not in seen:
            seen.add(row.key)
            out.append(row)
    return out


def _check_size(k: int, pool: list) -> None:
    # The query may itself be in the pool, so k + 1 distinct rows guarantee k demos each.
    if len(pool) < k + 1 and k > 0:
        raise UserError(f"eval.shots is {k} but the demonstration pool has only {len(pool)} distinct rows; "
                        f"lower eval.shots or give a larger eval.demos")


def select_random(queries: list, pool: list, k: int, seed: int, sets: int | None = None) -> list[list[int]]:
    """k + 1 rows drawn per query (the query's own row, if drawn, is dropped, else the last).
    With `sets`, query i takes the draw of position i mod `sets`, so queries share sets."""
    _check_size(k, pool)
    index = {row.key: i for i, row in enumerate(pool)}
    ranked = []
    for qi, query in enumerate(queries):
        # One generator per position: a query's demos do not depend on --limit or on order.
        rng = random.Random(seed * 1_000_003 + (qi % sets if sets else qi))
        draw = rng.sample(range(len(pool)), min(k + 1, len(pool)))
        own = index.get(query.key)
        ranked.append([j for j in draw if j != own][:k])
    return ranked


def select_nearest(query_vecs, pool_vecs, queries: list, pool: list, k: int) -> list[list[int]]:
    """Top-k pool rows by cosine similarity (vectors already L2-normalised)."""
    import torch

    _check_size(k, pool)
    if k == 0:
        return [[] for _ in queries]
    index = {row.key: i for i, row in enumerate(pool)}
    ranked = []
    for start in range(0, len(queries), 1024):  # bounded memory on large query sets
        sims = query_vecs[start:start + 1024] @ pool_vecs.T
        for r, query in enumerate(queries[start:start + 1024]):
            own = index.get(query.key)
            if own is not None:
                sims[r, own] = float("-inf")
        ranked.extend(torch.topk(sims, k, dim=1).indices.tolist())
    return ranked


@dataclass
class Prompt:
    text: str
    ids: list[int]
    demos: list[int]
    """Pool indices of the demonstrations, in prompt order."""
    dropped: int = 0
    """Demonstrations left out to fit the budget."""
    cut: bool = False
    """The query alone was over the budget and lost its start."""


@dataclass
class PromptStyle:
    template: object
    demo_separator: str
    answer_separator: str
    nearest_last: bool
    """Nearest selection puts the most similar demonstration right before the query."""


def special_prefix(tok) -> list[int]:
    """Special tokens the tokenizer puts in front of a text (e.g. BOS), none of those at the end:
    a prompt must end where the answer begins."""
    with_sp = tok("a", add_special_tokens=True)["input_ids"]
    without = tok("a", add_special_tokens=False)["input_ids"]
    pos = next((i for i in range(len(with_sp) - len(without) + 1) if with_sp[i:i + len(without)] == without), 0)
    return with_sp[:pos]


def build_prompts(queries: list, pool: list, ranked: list[list[int]], style: PromptStyle, tok,
                  budget: int) -> list[Prompt]:
    """Prompts of at most `budget` tokens: demonstrations, then the query."""
    t = style.template
    sep, ans = style.demo_separator, style.answer_separator
    query_texts = [_query_text(q, t, tok) for q in queries]
    used = sorted({j for r in ranked for j in r})
    demo_texts = {j: t.render(pool[j].fields, pool[j].where) + ans + pool[j].answer for j in used}
    prefix = [] if queries and queries[0].chat is not None else special_prefix(tok)
    # Piece lengths estimate how many demonstrations fit; the joined text is then
    # tokenized as a whole (what the model sees) and trimmed further if needed.
    lens = dict(zip(used, _lengths(tok, [demo_texts[j] for j in used])))
    qlens = _lengths(tok, query_texts)
    sep_len = len(tok(sep, add_special_tokens=False)["input_ids"]) if sep else 0
    keep = []
    for r, qlen in zip(ranked, qlens):
        total, n = len(prefix) + qlen, 0
        for j in r:
            if total + lens[j] + sep_len > budget:
                break
            total += lens[j] + sep_len
            n += 1
        keep.append(n)
    prompts = []
    for qi, (r, qtext) in enumerate(zip(ranked, query_texts)):
        prompts.append(_fit(r, keep[qi], qtext, demo_texts, style, tok, prefix, budget))
    return prompts


def _fit(ranked: list[int], n: int, qtext: str, demo_texts: dict, style: PromptStyle, tok, prefix,
         budget: int) -> Prompt:
    while True:
        chosen = ranked[:n]
        order = list(reversed(chosen)) if style.nearest_last else chosen
        text = style.demo_separator.join([demo_texts[j] for j in order] + [qtext])
        ids = prefix + tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= budget:
            return Prompt(text, ids, order, dropped=len(ranked) - n)
        if n == 0:
            room = max(budget - len(prefix), 1)
            return Prompt(text, prefix + ids[len(prefix):][-room:], [], dropped=len(ranked), cut=True)
        n -= 1


def _query_text(query, template, tok) -> str:
    if query.chat is not None:
        return tok.apply_chat_template(query.chat, tokenize=False, add_generation_prompt=True)
    return template.render(query.fields, query.where)


def _lengths(tok, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
