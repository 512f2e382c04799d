"""Hybrid search: reciprocal rank fusion of the dense and the BM25 lists, done by llmtune.

score(c) = Σ_lists weight / (k + rank of c in the list), over the lists that hold c.

Ranks are competition ranks of the scores (chunks with equal scores share the best rank of
their group: 1, 2, 2, 4), and the fused list is ordered by score, then source, then chunk
number. Milvus's own RRF ranks tied chunks in storage order, which differs between a store
updated incrementally and one built from scratch; with shared ranks the fused ranking is a
function of the scores alone, so both stores fuse alike.

RRF and not a weighted sum of scores because it needs no score calibration: BM25 scores are
unbounded and vary with the query's length and terms, cosines sit in a narrow band.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmtune.index.retrieve import Hit

RRF_K = 60
FUSION_DEPTH = 50
"""Each list is taken to max(k, FUSION_DEPTH) chunks."""
WEIGHTS = {"dense": 1.0, "bm25": 1.5}
"""k, depth and weights: the best nDCG@10 on the odd half of Cranfield's judged queries
(scripts/bench_hybrid.py). On the even half this hybrid was not better than dense alone by a
margin outside the bootstrap interval, so `dense` is the default mode (docs/indexing.md)."""


def competition_ranks(scores: list[float]) -> list[int]:
    """1-based ranks of a best-first score list, ties sharing the best rank of their group."""
    ranks, best = [], 0
    for i, s in enumerate(scores):
        if i == 0 or s != scores[i - 1]:
            best = i + 1
        ranks.append(best)
    return ranks


def key(hit: "Hit") -> tuple:
    return hit.source, hit.locator, hit.chunk


def fuse(lists: dict[str, list["Hit"]], limit: int, k: float = RRF_K, weights: dict | None = None
         ) -> list["Hit"]:
    """The top `limit` chunks of the lists fused; each hit's score is its fused score."""
    weights = weights or WEIGHTS
    fused: dict[tuple, float] = {}
    first: dict[tuple, "Hit"] = {}
    for name, hits in lists.items():
        for hit, rank in zip(hits, competition_ranks([h.score for h in hits])):
            fused[key(hit)] = fused.get(key(hit), 0.0) + weights[name] / (k + rank)
            first.setdefault(key(hit), hit)
    order = sorted(fused, key=lambda c: (-fused[c], c))[:limit]
    return [replace(first[c], rank=i, score=fused[c]) for i, c in enumerate(order, start=1)]


def in_order(hits: list["Hit"]) -> list["Hit"]:
    """A single mode's hits, ties on score put in (source, locator, chunk) order and ranked again."""
    ordered = sorted(hits, key=lambda h: (-h.score, key(h)))
    return [replace(h, rank=i) for i, h in enumerate(ordered, start=1)]
