"""Scoring an encoder at retrieval: every document cut into windows of the encoder's tokens
as `llmtune index` cuts them (data/chunking.py, the same special tokens around each), every
window and query embedded by models/encoder.py (pooled, L2-normalised), then exact search:
a document's score is its best window's cosine (max-passage), and the top `depth` documents
per query are ranked and scored at document level (evaluate/ir_metrics.py).

Exact, not approximate: this is the encoder's own quality, the figure a store's dense index
approaches (the HNSW recall of docs/indexing.md is the gap). A training run's final
evaluation and `llmtune eval` without a store both come here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llmtune.data.chunking import Chunker, special_tokens
from llmtune.evaluate.ir_metrics import score_run

if TYPE_CHECKING:
    from llmtune.data.retrieval import Collection
    from llmtune.models.encoder import Encoder

DEPTH = 100
"""Documents ranked per query: recall@100 needs 100."""
TOKENIZE_BLOCK = 1024
"""Documents per batched tokenizer call."""
QUERY_BLOCK = 256
"""Queries scored against every window at once; bounds the (queries x windows) score matrix."""


def document_windows(encoder: "Encoder", documents: dict[str, str], chunk_tokens: int,
                     overlap: int) -> tuple[list[list[int]], list[int]]:
    """(token ids of every window with the special tokens, the index of its document)."""
    chunker = Chunker(encoder.tokenizer, chunk_tokens, overlap)
    prefix, suffix = special_tokens(encoder.tokenizer)
    ids: list[list[int]] = []
    owner: list[int] = []
    texts = list(documents.values())
    for start in range(0, len(texts), TOKENIZE_BLOCK):
        for n, pieces in enumerate(chunker.split_many(texts[start:start + TOKENIZE_BLOCK]), start=start):
            for piece in pieces:
                ids.append(prefix + piece.ids + suffix)
                owner.append(n)
    return ids, owner


def rank_documents(encoder: "Encoder", queries: dict[str, str], documents: dict[str, str], *,
                   chunk_tokens: int, overlap: int, depth: int = DEPTH) -> tuple[dict[str, list[str]], dict]:
    """({query id: document ids best first}, counts and seconds)."""
    import torch

    t0 = time.perf_counter()
    ids, owner = document_windows(encoder, documents, chunk_tokens, overlap)
    windows = encoder.embed_ids(ids)
    t1 = time.perf_counter()
    vectors = torch.from_numpy(encoder.embed(list(queries.values()))) if queries else torch.zeros(0, encoder.dim)
    doc_ids = list(documents)
    owner_t = torch.tensor(owner, dtype=torch.long)
    run: dict[str, list[str]] = {}
    qids = list(queries)
    for start in range(0, len(qids), QUERY_BLOCK):
        block = vectors[start:start + QUERY_BLOCK]
        scores = block @ windows.T
        # Max over each document's windows; a document without windows (empty text) stays at -inf.
        best = torch.full((block.shape[0], len(doc_ids)), float("-inf"))
        best.scatter_reduce_(1, owner_t.expand(block.shape[0], -1), scores, reduce="amax")
        top = best.topk(min(depth, len(doc_ids)), dim=1)
        for row, qid in enumerate(qids[start:start + QUERY_BLOCK]):
            keep = [i for i, s in zip(top.indices[row].tolist(), top.values[row].tolist()) if s != float("-inf")]
            run[qid] = [doc_ids[i] for i in keep]
    info = {"documents": len(documents), "chunks": len(ids), "embed_seconds": t1 - t0,
            "search_seconds": time.perf_counter() - t1}
    return run, info


def evaluate_encoder(encoder: "Encoder", collection: "Collection", *, chunk_tokens: int, overlap: int,
                     depth: int = DEPTH) -> dict[str, Any]:
    """Headline figures (nDCG@10 first), counts, and `per_query` ({id: figures + top 10})."""
    run, info = rank_documents(encoder, collection.queries, collection.documents, chunk_tokens=chunk_tokens,
                               overlap=overlap, depth=depth)
    means, per_query = score_run(run, collection.qrels)
    for qid, scores in per_query.items():
        scores["top10"] = run.get(qid, [])[:10]
    return {**means, "search": "dense (exact)", "unjudged_queries": len(collection.queries) - means["queries"],
            **info, "per_query": per_query}
