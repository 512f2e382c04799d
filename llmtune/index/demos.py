"""In-context learning with demonstrations drawn from a store (`eval.selection: store`).

The store must hold the demonstration pool's texts (e.g. `llmtune index demos.jsonl
--store demos.db`, one row per chunk): each query's nearest chunks (dense search with the
store's own model) are matched back to pool rows by their text, so the demonstrations keep
their labels or reference answers. A row longer than the store's chunk size is split and
cannot be matched; the run reports queries that got fewer than k demonstrations.
"""

from __future__ import annotations

import os
from llmtune.errors import UserError

QUERY_BATCH = 256


def select_from_store(queries: list, pool: list, k: int, store: str, reporter) -> list[list[int]]:
    """Per query, up to k pool indices, nearest first (a row equal to the query never)."""
    from llmtune.index.retrieve import Retriever, open_store

    by_text = {row.key: i for i, row in enumerate(pool)}
    st, settings = open_store(store, os.environ.get("MILVUS_TOKEN"), "llmtune")
    ranked, matched_any = [], False
    with st:
        retriever = Retriever(st, settings)
        expr = retriever.filter_expr()
        # Spare hits: the query itself and chunks of other files may come first.
        depth = 2 * k + 8
        for start in range(0, len(queries), QUERY_BATCH):
            part = queries[start:start + QUERY_BATCH]
            for query, hits in zip(part, retriever.search_expr([q.key for q in part], depth, "dense", expr)):
                picked = []
                for hit in hits:
                    j = by_text.get(hit.text.strip())
                    if j is not None:
                        matched_any = True
                        if pool[j].key != query.key and j not in picked:
                            picked.append(j)
                ranked.append(picked[:k])
    if not matched_any:
        raise UserError(f"eval.store {store}: none of its chunks is a demonstration row's text; index the "
                        f"demonstration file itself (`llmtune index DEMOS --store {store} --text-column COLUMN`)")
    short = sum(1 for r in ranked if len(r) < k)
    if short:
        reporter.warn(f"{short} of {len(queries)} queries got fewer than {k} demonstrations from eval.store "
                      f"(their nearest chunks were not pool rows)")
    return ranked
