"""Hard negatives mined before training: for each training query, the documents of
`data.retrieval.documents` that the starting encoder ranks highest (exact search over the
same windows the evaluation uses) and that are none of the query's positives (by text)."""

from __future__ import annotations

from llmtune.data.retrieval import Pair
from llmtune.errors import UserError


def mine(encoder, recipe, pairs: list[Pair], count: int, skip: int, reporter) -> dict[str, list[str]]:
    """{query text: up to `count` negative document texts}, best ranked first."""
    from llmtune.data.retrieval import read_documents
    from llmtune.evaluate.retrieval import rank_documents

    spec = recipe.data.retrieval
    if spec is None:
        raise UserError("method.hard_negatives mines from data.retrieval.documents; add data.retrieval (documents "
                        "and qrels) and data.eval, or set hard_negatives: 0")
    documents = read_documents(recipe.data)
    positives: dict[str, set[str]] = {}
    for p in pairs:
        positives.setdefault(p.query, set()).add(p.positive.strip())
    queries = {str(i): q for i, q in enumerate(positives)}
    depth = skip + count + max(len(v) for v in positives.values())
    ranked, info = rank_documents(encoder, queries, documents, chunk_tokens=spec.chunk_tokens,
                                  overlap=spec.overlap, depth=depth)
    mined: dict[str, list[str]] = {}
    for qid, query in queries.items():
        others = [documents[d] for d in ranked[qid] if documents[d].strip() not in positives[query]]
        mined[query] = others[skip:skip + count]
    reporter.log(f"hard negatives: {sum(map(len, mined.values()))} mined for {len(queries)} training queries "
                 f"from {info['documents']} documents ({info['embed_seconds']:.1f} s)")
    return mined
