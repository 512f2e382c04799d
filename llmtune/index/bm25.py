"""BM25 computed by llmtune, with statistics kept for the whole store.

Why not Milvus's BM25 function: Milvus Lite scores BM25 per segment, each with its own
document count, document frequencies and mean length, counted over every row the segment was
written with (rows deleted since included). Each `llmtune index` run writes its chunks into a
new segment, so after an incremental run a changed file is scored against the statistics of
its own small segment: in the issue that found it, a document fell from rank 1 to rank 258.
Milvus Lite's compaction merges segments only in size buckets of four and did not cure it.

So the store keeps the statistics itself and Milvus only sums products:
- a chunk's sparse vector holds, per term t (analyzer.py), its BM25 term weight
      w(t, c) = tf (k1 + 1) / (tf + k1 (1 - b + b len(c) / L)),
  where len(c) is the chunk's length in the embedding model's tokens and L the store's chunk
  size. BM25 divides by the collection's mean length instead; chunks are cut to at most L
  tokens, so the two are close, and a fixed L makes a chunk's weights depend on the chunk
  alone: they never need rewriting when other files change;
- the collection `C_terms` holds the number of chunks N (row -1) and, per term, the number
  of chunks holding it (df), updated by every commit;
- a query's sparse vector holds, per query term, its count times
      idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)),
  read from `C_terms` at query time; Milvus ranks chunks by the inner product. So a store
  updated incrementally ranks exactly as one built from scratch over the same files, in every
  mode (embedded, served, a Milvus cluster: the same calls).

Kill-safety: an index run marks the statistics stale (`C_meta` row `bm25_stale`) before its
first write and clears the mark after its last; a run that finds the mark (the last one was
killed) recounts them from the stored sparse vectors.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING

from llmtune.index.analyzer import EMPTY_DIM, analyzer_for

if TYPE_CHECKING:
    from llmtune.index.settings import StoreSettings
    from llmtune.index.store import Store

N_ROW = -1
"""The `C_terms` row holding the number of chunks (term dimensions are never negative)."""
STALE_FLAG = "bm25_stale"


def chunk_vector(settings: "StoreSettings", text: str, length: int) -> tuple[dict[int, float], list[int]]:
    """(the chunk's sparse vector, its term dimensions)."""
    counts = analyzer_for(settings.analyzer["language"], settings.analyzer["stop_words"]).counts(text)
    k1, b = settings.bm25["k1"], settings.bm25["b"]
    norm = k1 * (1.0 - b + b * length / settings.chunk_tokens)
    if not counts:
        return {EMPTY_DIM: 1e-30}, []
    return {d: tf * (k1 + 1.0) / (tf + norm) for d, tf in counts.items()}, list(counts)


def query_vectors(store: "Store", settings: "StoreSettings", texts: list[str]) -> list[dict[int, float]]:
    """Each query's sparse vector: idf-weighted term counts (terms no chunk holds are left out)."""
    analyzer = analyzer_for(settings.analyzer["language"], settings.analyzer["stop_words"])
    counts = [analyzer.counts(t) for t in texts]
    dfs = store.term_dfs(sorted({d for c in counts for d in c} | {N_ROW}))
    n = dfs.get(N_ROW, 0)
    return [{d: q * idf(n, dfs[d]) for d, q in c.items() if dfs.get(d)} for c in counts]


def idf(n: int, df: int) -> float:
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


class TermDelta:
    """Changes to the statistics from one commit, written with `apply`."""

    def __init__(self) -> None:
        self.df: Counter = Counter()
        self.n = 0

    def add(self, dims: list[int]) -> None:
        self.df.update(dims)
        self.n += 1

    def remove_stored(self, sparse_rows: list[dict]) -> None:
        """Chunks about to be deleted, as the store returns their sparse vectors."""
        for row in sparse_rows:
            self.df.subtract(_dims(row["sparse"]))
            self.n -= 1

    def apply(self, store: "Store") -> None:
        self.df[N_ROW] += self.n
        changed = {d: c for d, c in self.df.items() if c}
        if not changed:
            return
        current = store.term_dfs(sorted(changed))
        store.put_term_dfs({d: current.get(d, 0) + c for d, c in changed.items()})
        self.df, self.n = Counter(), 0


def recount(store: "Store") -> None:
    """The statistics from the stored chunks (after a killed run)."""
    delta = TermDelta()
    for row in store.chunks_iter("", ["sparse"]):
        delta.add(list(_dims(row["sparse"])))
    store.reset_terms()
    delta.apply(store)


def _dims(sparse) -> list[int]:
    """Dimensions of a stored sparse vector (a dict from the client; tolerate other shapes)."""
    dims = sparse.keys() if isinstance(sparse, dict) else (d for d, _ in sparse)
    return [int(d) for d in dims if int(d) != EMPTY_DIM]
