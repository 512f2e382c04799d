"""Ranking metrics for the retrieval benchmark, as trec_eval defines them.

`ranked` lists document ids best first, each once; `qrels` maps a document id to its graded
relevance (a gain; 0 or absent: not relevant). nDCG uses linear gains (trec_eval's
`ndcg_cut`); MRR is the reciprocal rank of the first relevant document within the ranking
given (0 if none).
"""

from __future__ import annotations

import math


def ndcg_at_k(ranked: list, qrels: dict, k: int = 10) -> float:
    dcg = sum(qrels.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: list, qrels: dict, k: int = 100) -> float:
    relevant = {d for d, g in qrels.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: list, qrels: dict) -> float:
    for i, doc in enumerate(ranked):
        if qrels.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def evaluate_run(run: dict, qrels: dict, *, ndcg_k: int = 10, recall_k: int = 100) -> dict:
    """Means over the queries that have at least one relevant document."""
    judged = [q for q, rels in qrels.items() if any(g > 0 for g in rels.values())]
    if not judged:
        return {f"ndcg@{ndcg_k}": 0.0, f"recall@{recall_k}": 0.0, "mrr": 0.0, "queries": 0}
    rows = [(ndcg_at_k(run.get(q, []), qrels[q], ndcg_k), recall_at_k(run.get(q, []), qrels[q], recall_k),
             reciprocal_rank(run.get(q, []), qrels[q])) for q in judged]
    n = len(rows)
    return {f"ndcg@{ndcg_k}": sum(r[0] for r in rows) / n, f"recall@{recall_k}": sum(r[1] for r in rows) / n,
            "mrr": sum(r[2] for r in rows) / n, "queries": n}
