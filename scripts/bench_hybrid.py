"""Cranfield: dense, BM25 and hybrid search of an `llmtune index` store, with every setting
chosen on one half of the judged queries and reported on the other (figures in docs/indexing.md).
Not a test.

- Split: judged Cranfield queries with an odd id (1, 3, ...) choose; those with an even id report.
- Hybrid: the fusion's k, the BM25 list's weight (the dense list's is 1) and the depth of both
  lists are picked on the choosing half by nDCG@10 (document level: a document ranks by its best
  chunk, 300 chunks per list); the reporting half gives dense, BM25 and that hybrid, with a
  paired bootstrap interval (10,000 resamples of queries) of hybrid - dense.
- BM25's length normalisation: llmtune's (a chunk's tokens over the store's chunk size, so a
  chunk's weights never change) beside the textbook one (over the mean chunk length), computed
  here on the same terms, to show what the fixed reference costs.
- `ask`'s threshold: the best dense cosine of each judged query (answerable: the collection
  holds relevant documents) against that of general questions nothing in it answers (the
  77 question-mark instructions without input of LLaMA-Factory's alpaca demo); the threshold
  is chosen on the odd halves (the best balanced accuracy) and reported on the even ones.

Run under the CPU lock:  flock -x /work/locks/cpu.lock .venv/bin/python scripts/bench_hybrid.py
  --store WORK/cran.db (built with default settings if it does not exist) --out result.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_index import SHARED, load_cranfield, machine, maxp  # noqa: E402

K_GRID = (5, 10, 20, 30, 60, 100)
WEIGHT_GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
DEPTH_GRID = (50, 100, 300)
DEPTH = 300


def build(store: Path, docs: dict) -> dict:
    from llmtune.index.sync import index_paths

    corpus = store.parent / "cranfield.jsonl"
    corpus.write_text("".join(json.dumps({"id": d, "text": t}) + "\n" for d, t in docs.items()))
    return index_paths([corpus], str(store), id_column="id")


def doc_of(hit) -> str:
    return hit.locator.split("=", 1)[1]  # locator "id=<doc id>"


def retrieve(store: Path, queries: dict[str, str]) -> tuple[dict, dict, list, dict]:
    """(dense hits, bm25 hits per query id, every chunk's text and token length, settings)."""
    from llmtune.index.retrieve import Retriever, open_store

    st, settings = open_store(str(store), None, "llmtune")
    qids = list(queries)
    with st:
        r = Retriever(st, settings)
        expr = r.filter_expr()
        vectors = r.encoder.embed_queries([queries[q] for q in qids])
        dense = dict(zip(qids, r.search_dense(vectors, DEPTH, expr)))
        bm25 = dict(zip(qids, r.search_bm25([queries[q] for q in qids], DEPTH, expr)))
        chunks = [(row["text"], row["locator"], row["end"] - row["start"])
                  for row in st.chunks_where(expr, ["text", "locator", "start", "end"])]
    return dense, bm25, chunks, settings


def score(run: dict, qrels: dict, qids: list[str]) -> tuple[dict, dict]:
    from llmtune.evaluate.ir_metrics import score_run

    return score_run({q: run.get(q, []) for q in qids}, {q: qrels[q] for q in qids})


def hybrid_run(dense: dict, bm25: dict, k: float, weight: float, depth: int) -> dict:
    from llmtune.index.fusion import fuse

    return {q: maxp(fuse({"dense": dense[q][:depth], "bm25": bm25[q][:depth]}, depth,
                         k=k, weights={"dense": 1.0, "bm25": weight}), doc_of) for q in dense}


def choose_fusion(dense: dict, bm25: dict, qrels: dict, choose: list[str]) -> tuple[dict, list]:
    grid = []
    for depth in DEPTH_GRID:
        for k in K_GRID:
            for w in WEIGHT_GRID:
                run = hybrid_run({q: dense[q] for q in choose}, {q: bm25[q] for q in choose}, k, w, depth)
                grid.append({"k": k, "bm25_weight": w, "depth": depth,
                             "ndcg@10": score(run, qrels, choose)[0]["ndcg@10"]})
    best = max(grid, key=lambda g: g["ndcg@10"])
    return best, grid


def textbook_bm25(chunks: list, queries: dict, settings) -> dict:
    """BM25 over the same chunks and terms, length normalised by the mean chunk length (in terms)."""
    from llmtune.index.analyzer import analyzer_for

    an = analyzer_for(settings.analyzer["language"], settings.analyzer["stop_words"])
    k1, b = settings.bm25["k1"], settings.bm25["b"]
    terms = [Counter(an.terms(t)) for t, _, _ in chunks]
    df = Counter(t for c in terms for t in c)
    n = len(chunks)
    lengths = [sum(c.values()) for c in terms]
    mean = sum(lengths) / n
    run = {}
    for q, text in queries.items():
        qt = Counter(an.terms(text))
        scores = []
        for i, c in enumerate(terms):
            norm = k1 * (1 - b + b * lengths[i] / mean)
            s = sum(qn * math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5)) * c[t] * (k1 + 1) / (c[t] + norm)
                    for t, qn in qt.items() if t in c)
            if s > 0:
                scores.append((s, i))
        scores.sort(reverse=True)
        run[q] = maxp([chunks[i][1].split("=", 1)[1] for _, i in scores[:DEPTH]], lambda d: d)
    return run


def threshold_study(store: Path, dense: dict, qrels: dict, choose: list[str], report: list[str]) -> dict:
    from llmtune.index.retrieve import Retriever, open_store

    demo = json.loads((SHARED / "llamafactory_demo" / "alpaca_en_demo.json").read_text())
    general = [r["instruction"] for r in demo if r["instruction"].strip().endswith("?") and not r.get("input")]
    st, settings = open_store(str(store), None, "llmtune")
    with st:
        r = Retriever(st, settings)
        top = [h[0].score if h else 0.0 for h in r.search_dense(r.encoder.embed_queries(general), 1, r.filter_expr())]
    answerable = {q: dense[q][0].score for q in choose + report}
    gen_choose, gen_report = top[0::2], top[1::2]

    def rates(t: float, ans: list[float], gen: list[float]) -> dict:
        kept = sum(s >= t for s in ans) / len(ans)
        refused = sum(s < t for s in gen) / len(gen)
        return {"answerable_kept": kept, "general_refused": refused, "balanced": (kept + refused) / 2}

    candidates = sorted({round(s, 3) for s in list(answerable.values()) + top})
    best = max(candidates, key=lambda t: rates(t, [answerable[q] for q in choose], gen_choose)["balanced"])
    return {"threshold": best, "choose": rates(best, [answerable[q] for q in choose], gen_choose),
            "report": rates(best, [answerable[q] for q in report], gen_report),
            "general_questions": len(general), "general_top_cosine_median": sorted(top)[len(top) // 2],
            "answerable_top_cosine_median": sorted(answerable.values())[len(answerable) // 2]}


def main() -> None:
    from llmtune.evaluate.ir_metrics import bootstrap_interval

    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default="/tmp/bench-cranfield/cran.db")
    ap.add_argument("--data", default=str(SHARED / "cranfield"))
    ap.add_argument("--out")
    args = ap.parse_args()
    docs, queries, qrels = load_cranfield(Path(args.data))
    judged = sorted((q for q, r in qrels.items() if any(g > 0 for g in r.values())), key=int)
    choose, report = [q for q in judged if int(q) % 2], [q for q in judged if not int(q) % 2]
    store = Path(args.store)
    result: dict = {"machine": machine(), "queries_choose": len(choose), "queries_report": len(report)}
    if not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        result["build"] = {"summary": build(store, docs), "seconds": time.perf_counter() - t0}
    dense, bm25, chunks, settings = retrieve(store, {q: queries[q] for q in judged})
    best, grid = choose_fusion(dense, bm25, qrels, choose)
    result["fusion_chosen"], result["fusion_grid"] = best, grid
    runs = {"dense": {q: maxp(h, doc_of) for q, h in dense.items()},
            "bm25": {q: maxp(h, doc_of) for q, h in bm25.items()},
            "hybrid": hybrid_run(dense, bm25, best["k"], best["bm25_weight"], best["depth"]),
            "hybrid k=60 w=1 depth=100": hybrid_run(dense, bm25, 60, 1.0, 100)}
    runs["bm25, mean-length normalisation (textbook)"] = textbook_bm25(chunks, {q: queries[q] for q in judged},
                                                                       settings)
    result["report"] = {}
    per_query = {}
    for name, run in runs.items():
        means, per = score(run, qrels, report)
        result["report"][name] = means
        per_query[name] = per
    for other in ("dense", "bm25"):
        diffs = [per_query["hybrid"][q]["ndcg@10"] - per_query[other][q]["ndcg@10"] for q in report]
        result[f"hybrid_minus_{other}_ndcg@10"] = {"mean": sum(diffs) / len(diffs),
                                                  "interval95": bootstrap_interval(diffs),
                                                  "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs)}
    result["ask_threshold"] = threshold_study(store, dense, qrels, choose, report)
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
