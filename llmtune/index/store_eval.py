"""`llmtune eval` of a retrieval recipe through a store (`eval.store`, `eval.search`): the eval
queries are searched as `llmtune query --per document` searches them (dense, bm25 or hybrid),
and the documents found are scored like the in-memory evaluation (evaluate/ir_metrics.py).

The store must hold the recipe's documents file, indexed with `--id-column` set to
`data.retrieval.id_column` (so a chunk names its document), and must have been built with the
encoder being evaluated: the run itself (`llmtune index --encoder RUN`) or, for a recipe, its
model; any other is refused, as `llmtune query` refuses it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune.errors import UserError

if TYPE_CHECKING:
    from llmtune.runs.open import Target

DEPTH = 100
"""Documents ranked per query: recall@100 needs 100."""


def evaluate_through_store(t: "Target", limit: int | None, reporter) -> dict[str, Any]:
    from llmtune.data.retrieval import read_collection
    from llmtune.evaluate.ir_metrics import score_run
    from llmtune.index.documents import search_documents
    from llmtune.index.retrieve import Retriever, open_store

    r = t.recipe
    spec = r.data.retrieval
    collection = read_collection(r.data, limit or r.eval.limit)
    encoder = str(t.run_dir) if t.run_dir is not None else r.model.name
    st, settings = open_store(r.eval.store, os.environ.get("MILVUS_TOKEN"), "llmtune")
    t0 = time.perf_counter()
    with st:
        retriever = Retriever(st, settings, model=encoder)
        documents = str(Path(spec.documents).resolve())
        if documents not in st.file_states():
            raise UserError(f"eval.store {r.eval.store}: it does not hold data.retrieval.documents ({documents}); "
                            f"index it there: llmtune index {documents} --id-column {spec.id_column} --store "
                            f"{r.eval.store} --encoder {encoder}")
        qids = list(collection.queries)
        found = search_documents(retriever, [collection.queries[q] for q in qids], DEPTH, r.eval.search)
    prefix = f"{spec.id_column}="
    run, foreign = {}, 0
    for qid, docs in zip(qids, found):
        ids = [d.locator[len(prefix):] for d in docs if d.source == documents and d.locator.startswith(prefix)]
        foreign += len(docs) - len(ids)
        run[qid] = [i for i in ids if i in collection.documents]
    if foreign:
        reporter.warn(f"eval.store: {foreign} hits were not rows of {documents} named by {prefix}ID (other files, "
                      f"or indexed without --id-column {spec.id_column}); they count as misses")
    means, per_query = score_run(run, collection.qrels)
    for qid, scores in per_query.items():
        scores["top10"] = run.get(qid, [])[:10]
    reporter.log(f"retrieval eval ({r.eval.search}, {st.loc.describe()}): nDCG@10 {means['ndcg@10']:.4f}, "
                 f"recall@100 {means['recall@100']:.4f} over {means['queries']} judged queries")
    return {"split": "eval", **means, "search": f"{r.eval.search} ({st.loc.describe()})",
            "unjudged_queries": len(collection.queries) - means["queries"], "documents": len(collection.documents),
            "search_seconds": time.perf_counter() - t0, "collection": collection.fingerprint(),
            "per_query": per_query}
