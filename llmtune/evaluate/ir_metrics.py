"""Ranking metrics at document level, as trec_eval defines them.

`ranked` lists document ids best first, each once; `qrels` maps a document id to its graded
relevance (a gain; 0 or absent: not relevant). nDCG uses linear gains (trec_eval's
`ndcg_cut`); MAP@k is trec_eval's `map_cut` (precision at each relevant document within the
first k, summed, over the number of relevant documents); recall and MRR count any gain > 0
as relevant; MRR is the reciprocal rank of the first relevant document within the ranking
given (0 if none), so its depth is the ranking's.
"""

from __future__ import annotations

import math

HEADLINE = ("ndcg@10", "map@10", "recall@10", "recall@100", "mrr")
"""The figures a retrieval evaluation reports, in this order; nDCG@10 is the primary one."""


def ndcg_at_k(ranked: list, qrels: dict, k: int = 10) -> float:
    dcg = sum(qrels.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def average_precision_at_k(ranked: list, qrels: dict, k: int = 10) -> float:
    relevant = sum(1 for g in qrels.values() if g > 0)
    if not relevant:
        return 0.0
    hits, total = 0, 0.0
    for i, doc in enumerate(ranked[:k]):
        if qrels.get(doc, 0) > 0:
            hits += 1
            total += hits / (i + 1)
    return total / relevant


def recall_at_k(ranked: list, qrels: dict, k: int = 100) -> float:
    relevant = {d for d, g in qrels.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: list, qrels: dict) -> float:
    for i, doc in enumerate(ranked):
        if qrels.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def query_scores(ranked: list, qrels: dict) -> dict[str, float]:
    """Every HEADLINE figure for one query."""
    return {"ndcg@10": ndcg_at_k(ranked, qrels, 10), "map@10": average_precision_at_k(ranked, qrels, 10),
            "recall@10": recall_at_k(ranked, qrels, 10), "recall@100": recall_at_k(ranked, qrels, 100),
            "mrr": reciprocal_rank(ranked, qrels)}


def judged_queries(qrels: dict) -> list:
    """Queries with at least one relevant document: the ones a mean is taken over."""
    return [q for q, rels in qrels.items() if any(g > 0 for g in rels.values())]


def score_run(run: dict, qrels: dict) -> tuple[dict, dict]:
    """(means of every HEADLINE figure plus `queries`, {query id: its figures}) over the
    judged queries; a judged query missing from `run` retrieved nothing."""
    per_query = {q: query_scores(run.get(q, []), qrels[q]) for q in judged_queries(qrels)}
    n = len(per_query)
    means = {m: (sum(s[m] for s in per_query.values()) / n if n else 0.0) for m in HEADLINE}
    return {**means, "queries": n}, per_query


def evaluate_run(run: dict, qrels: dict, *, ndcg_k: int = 10, recall_k: int = 100) -> dict:
    """Means over the queries that have at least one relevant document."""
    judged = judged_queries(qrels)
    if not judged:
        return {f"ndcg@{ndcg_k}": 0.0, f"recall@{recall_k}": 0.0, "mrr": 0.0, "queries": 0}
    rows = [(ndcg_at_k(run.get(q, []), qrels[q], ndcg_k), recall_at_k(run.get(q, []), qrels[q], recall_k),
             reciprocal_rank(run.get(q, []), qrels[q])) for q in judged]
    n = len(rows)
    return {f"ndcg@{ndcg_k}": sum(r[0] for r in rows) / n, f"recall@{recall_k}": sum(r[1] for r in rows) / n,
            "mrr": sum(r[2] for r in rows) / n, "queries": n}


def bootstrap_interval(values: list[float], *, samples: int = 10000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-query `values` (queries resampled
    with replacement). For two systems on the same queries, pass the per-query differences:
    the paired interval, which is what says whether one beats the other."""
    import random

    if not values:
        return 0.0, 0.0
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(samples))
    lo = means[int((1 - level) / 2 * samples)]
    hi = means[min(samples - 1, int((1 + level) / 2 * samples))]
    return lo, hi
