"""Benchmarks of `llmtune index/query` (figures in docs/indexing.md). Not a test.

  cranfield: retrieval quality on the Cranfield collection (1,400 abstracts, 225 queries,
      graded judgments): nDCG@10, recall@100 and MRR for BM25, dense (MiniLM) and hybrid
      (RRF; weighted fusion alongside), and BM25 from a second library (bm25s) as a
      cross-check, on the same chunks and on whole documents.
  scale: N synthetic passages (default 100,000, one chunk each): `llmtune index` against
      `llmtune embed` on the same texts (both CLIs, end to end, split into embedding and
      insert time), query latency p50/p95 embedded and on a `milvus-lite server`, without
      and with query embedding, recall@10 of the ANN index against exact search, size on disk.

Run under the CPU lock:  flock -x /tmp/llmtune-cpu.lock .venv/bin/python scripts/bench_index.py cranfield
Needs the `index` and `bench` extras (pip install -e '.[index,bench]').
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# shared/ sits beside the checkout (CI, the main checkout) or beside a worktree's parent.
SHARED = next((p / "shared" / "data" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared" / "data").is_dir()),
              ROOT.parent / "shared" / "data")
sys.path.insert(0, str(ROOT))


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    versions = {}
    for name in ("torch", "transformers", "pymilvus", "milvus_lite", "bm25s", "faiss"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing optional library is just not listed
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "python": platform.python_version(), **versions}


# -- Cranfield -------------------------------------------------------------------------------
def read_smart(path: Path) -> list[dict]:
    """SMART records: '.I n' starts one, '.X' lines start fields (CRLF line ends)."""
    records, field = [], None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(".I"):
            records.append({"I": line[2:].strip()})
            field = None
        elif re.match(r"^\.[A-Z]$", line.strip()):
            field = line.strip()[1]
            records[-1][field] = ""
        elif field:
            records[-1][field] += line.strip() + "\n"
    return records


def load_cranfield(folder: Path):
    docs = {}
    for r in read_smart(folder / "cran.all.1400"):
        text = (r.get("W") or "").strip() or (r.get("T") or "").strip()  # .W starts with the title already
        docs[r["I"]] = " ".join(text.split())
    # Query ids in the qrels are positions in cran.qry (1..225), not the .I numbers (001..365, gaps).
    queries = {str(n): " ".join(r["W"].split()) for n, r in enumerate(read_smart(folder / "cran.qry"), start=1)}
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for line in (folder / "cranqrel").read_text().splitlines():
        if line.strip():
            q, d, grade = line.split()[:3]
            # Grades 1 (complete answer) .. 4 (minimum interest); -1 marks a judged non-relevant doc.
            qrels[q][d] = 5 - int(grade) if int(grade) > 0 else 0
    return docs, queries, dict(qrels)


def maxp(chunk_lists, doc_of, depth: int = 100) -> list[str]:
    """Chunks best first -> documents best first (a document ranks by its best chunk)."""
    seen, out = set(), []
    for item in chunk_lists:
        d = doc_of(item)
        if d not in seen:
            seen.add(d)
            out.append(d)
            if len(out) == depth:
                break
    return out


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())  # what Milvus Lite's standard analyzer does


def bm25s_run(texts: list[str], queries: dict, k: int, tokenize) -> dict[str, list[int]]:
    import bm25s

    index = bm25s.BM25(k1=1.5, b=0.75, method="lucene")  # Milvus Lite's BM25: k1 1.5, b 0.75, Lucene idf
    index.index([tokenize(t) for t in texts], show_progress=False)
    qids = list(queries)
    found, _ = index.retrieve([tokenize(queries[q]) or ["\0"] for q in qids], k=min(k, len(texts)),
                              show_progress=False)
    return {q: list(map(int, row)) for q, row in zip(qids, found)}


def bench_cranfield(args) -> dict:
    import bm25s

    from llmtune.evaluate.ir_metrics import evaluate_run
    from llmtune.index.retrieve import Retriever, open_store
    from llmtune.index.sync import index_paths

    docs, queries, qrels = load_cranfield(Path(args.data))
    work = Path(tempfile.mkdtemp(prefix="bench-cran-"))
    corpus = work / "cranfield.jsonl"
    corpus.write_text("".join(json.dumps({"id": d, "text": t}) + "\n" for d, t in docs.items()))
    store = str(work / "cran.db")
    t0 = time.perf_counter()
    summary = index_paths([corpus], store, id_column="id")
    build_s = time.perf_counter() - t0
    st, settings = open_store(store, None, "llmtune")
    qids = list(queries)
    qtexts = [queries[q] for q in qids]
    runs, seconds = {}, {}
    doc_of_hit = lambda h: h.locator.split("=", 1)[1]  # noqa: E731 - locator "id=<doc id>"
    with st:
        r = Retriever(st, settings)
        expr = r.filter_expr()
        vectors = r.encoder.embed_queries(qtexts)
        for mode in ("bm25", "dense", "hybrid"):
            t0 = time.perf_counter()
            hits = r.search_expr(qtexts, args.depth, mode, expr, vectors)
            seconds[mode] = time.perf_counter() - t0
            runs[mode] = {q: maxp(h, doc_of_hit) for q, h in zip(qids, hits)}
        from pymilvus import WeightedRanker

        from llmtune.index.retrieve import _hits
        from llmtune.index.settings import search_params

        params = search_params(settings.index, args.depth)
        weighted = [_hits(st.search_hybrid(v, q, args.depth, args.depth, expr, params, WeightedRanker(0.5, 0.5)))
                    for q, v in zip(qtexts, vectors)]
        runs["hybrid, weighted 0.5/0.5"] = {q: maxp(h, doc_of_hit) for q, h in zip(qids, weighted)}
        chunks = st.chunks_where(expr, ["text", "locator"])
    chunk_doc = [c["locator"].split("=", 1)[1] for c in chunks]
    same = bm25s_run([c["text"] for c in chunks], queries, args.depth, words)
    runs["bm25s, same chunks"] = {q: maxp(same[q], chunk_doc.__getitem__) for q in qids}
    doc_ids = list(docs)
    whole = bm25s_run([docs[d] for d in doc_ids], queries, 100, words)
    runs["bm25s, whole documents"] = {q: [doc_ids[i] for i in whole[q]] for q in qids}
    default_tok = lambda t: bm25s.tokenize(t, stopwords="en", return_ids=False, show_progress=False)[0]  # noqa: E731
    stop = bm25s_run([docs[d] for d in doc_ids], queries, 100, default_tok)
    runs["bm25s, whole documents, English stopwords"] = {q: [doc_ids[i] for i in stop[q]] for q in qids}
    metrics = {name: evaluate_run(run, qrels) for name, run in runs.items()}
    best_single = max(metrics["bm25"]["ndcg@10"], metrics["dense"]["ndcg@10"])
    from llmtune.evaluate.ir_metrics import ndcg_at_k

    per_query = {m: [ndcg_at_k(runs[m][q], qrels.get(q, {}), 10) for q in qids] for m in ("bm25", "dense", "hybrid")}
    better = "bm25" if metrics["bm25"]["ndcg@10"] >= metrics["dense"]["ndcg@10"] else "dense"
    wins = sum(h > b for h, b in zip(per_query["hybrid"], per_query[better]))
    losses = sum(h < b for h, b in zip(per_query["hybrid"], per_query[better]))
    shutil.rmtree(work, ignore_errors=True)
    from math import comb

    # Two-sided sign test over the queries where hybrid and the better single mode differ.
    n = wins + losses
    sign_p = min(1.0, 2 * sum(comb(n, i) for i in range(max(wins, losses), n + 1)) / 2 ** n) if n else 1.0
    return {"benchmark": "cranfield", "machine": machine(), "docs": len(docs), "queries": len(queries),
            "chunks": summary["chunks_in_store"], "settings": summary["settings"], "build_seconds": round(build_s, 1),
            "search_seconds_all_queries": {k: round(v, 2) for k, v in seconds.items()}, "depth_chunks": args.depth,
            "metrics": metrics, "hybrid_minus_best_single_ndcg10": metrics["hybrid"]["ndcg@10"] - best_single,
            "hybrid_vs_" + better: {"queries_better": wins, "queries_worse": losses, "sign_test_p": sign_p}}


# -- Scale -----------------------------------------------------------------------------------
class Markov:
    """An order-2 word chain over AG News and Cranfield text: synthetic passages with real
    vocabulary and topic drift, reproducible from a seed, and nothing copied whole."""

    def __init__(self, texts: list[str], seed: int):
        self.next: dict[tuple, list[str]] = defaultdict(list)
        self.starts = []
        for text in texts:
            w = text.split()
            if len(w) > 3:
                self.starts.append((w[0], w[1]))
                for a, b, c in zip(w, w[1:], w[2:]):
                    self.next[(a, b)].append(c)
        self.rng = random.Random(seed)

    def passage(self, n_words: int) -> str:
        a, b = self.rng.choice(self.starts)
        out = [a, b]
        while len(out) < n_words:
            options = self.next.get((a, b))
            if not options:
                a, b = self.rng.choice(self.starts)
                out.extend((a, b))
                continue
            a, b = b, self.rng.choice(options)
            out.append(b)
        return " ".join(out[:n_words])


def synthetic(n: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    texts = []
    for name in ("dev.tsv", "test.tsv"):
        texts += [line.split("\t")[0].replace("\\", " ") for line in (SHARED / "agnews" / name).read_text().splitlines()]
    docs, _, _ = load_cranfield(SHARED / "cranfield")
    chain = Markov(texts + list(docs.values()), seed)
    passages = [chain.passage(chain.rng.randint(20, 34)) for _ in range(n)]  # one chunk each
    queries = [chain.passage(chain.rng.randint(6, 12)) for _ in range(n_queries)]
    return passages, queries


def run_cli(args: list[str], env: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "llmtune", *args, "--json"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"llmtune {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return wall, json.loads(res.stdout)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def percentiles(samples: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
            "n": len(ms)}


def time_queries(retriever, queries: list[str], vectors, k: int = 10) -> dict:
    """Per query and mode: the search call alone (one Milvus request, the visibility filter
    computed once), the path `llmtune query` takes (visibility check + search), and that
    path with the query's embedding."""
    out = {}
    expr = retriever.filter_expr()
    for mode in ("dense", "bm25", "hybrid"):
        retriever.search(queries[:5], k, mode, vectors=vectors[:5])  # warm caches and connections
        needs_vector = mode != "bm25"
        timings = {"search": [], "check + search": [], "check + search + query embedding": []}
        for q, v in zip(queries, vectors):
            one = v[None, :] if needs_vector else None
            t0 = time.perf_counter()
            retriever.search_expr([q], k, mode, expr, one)
            t1 = time.perf_counter()
            retriever.search([q], k, mode, vectors=one)
            t2 = time.perf_counter()
            timings["search"].append(t1 - t0)
            timings["check + search"].append(t2 - t1)
            if needs_vector:
                retriever.search([q], k, mode)
                timings["check + search + query embedding"].append(time.perf_counter() - t2)
        out[mode] = {name: percentiles(t) for name, t in timings.items() if t}
    return out


def ann_recall(retriever, vectors, exact_matrix, k: int = 10) -> float:
    import numpy as np

    got = retriever.search([""] * len(vectors), k, "dense", vectors=vectors)
    truth = np.argsort(-(vectors @ exact_matrix.T), axis=1)[:, :k]
    recalls = [len({int(h.locator.split("=", 1)[1]) for h in hits} & set(map(int, row))) / k
               for hits, row in zip(got, truth)]
    return float(np.mean(recalls))


def start_server(data_dir: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Milvus Lite's server with llmtune's fast search path, as docs/indexing.md tells users to serve.
    proc = subprocess.Popen([sys.executable, "-m", "llmtune.index.serve", "--data-dir", data_dir, "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    from pymilvus import MilvusClient

    for _ in range(600):
        try:
            MilvusClient(uri=uri, timeout=2).list_collections()
            return proc, uri
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("milvus-lite server did not start")


def bench_scale(args) -> dict:
    import numpy as np

    from llmtune.index.retrieve import Retriever, open_store

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    passages, queries = synthetic(args.chunks, args.queries)
    corpus = work / "passages.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(passages)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = {"benchmark": "scale", "machine": machine(), "chunks_requested": args.chunks}
    store, vectors_file = work / "scale.db", work / "vectors.npy"
    shutil.rmtree(store, ignore_errors=True)
    embed_wall, embed_sum = run_cli(["embed", "minilm", str(corpus), "--text-column", "text", "--normalize",
                                     "--out", str(vectors_file)], env)
    index_wall, index_sum = run_cli(["index", str(corpus), "--store", str(store), "--id-column", "id"], env)
    s = index_sum["seconds"]
    result["build"] = {
        "chunks": index_sum["chunks_in_store"],
        "embed_cli_wall_s": round(embed_wall, 1), "embed_cli_embed_s": embed_sum["embed_seconds"],
        "index_cli_wall_s": round(index_wall, 1), "index_seconds": s,
        "ratio_wall": round(index_wall / embed_wall, 3),
        "ratio_work": round((s.get("parse", 0) + s.get("embed", 0) + s.get("insert", 0) + s.get("close", 0))
                            / embed_sum["embed_seconds"], 3),
        "index_chunks_per_s": round(index_sum["chunks_in_store"] / index_wall, 1),
        "embed_rows_per_s": embed_sum["rows_per_s"],
    }
    result["size_on_disk_mb"] = {"store": round(du(store) / 2**20, 1),
                                 "raw_float32_vectors": round(vectors_file.stat().st_size / 2**20, 1)}
    exact = np.load(vectors_file, mmap_mode="r")
    exact = np.ascontiguousarray(exact, dtype=np.float32)
    latency = {}
    t0 = time.perf_counter()
    st, settings = open_store(str(store), None, "llmtune")
    latency["embedded_open_s"] = round(time.perf_counter() - t0, 2)
    with st:
        r = Retriever(st, settings)
        qvec = r.encoder.embed_queries(queries)
        result["ann_recall@10"] = ann_recall(r, qvec, exact)
        latency["embedded"] = time_queries(r, queries, qvec)
    proc, uri = start_server(str(store))
    try:
        st, settings = open_store(uri, None, "llmtune")
        with st:
            r = Retriever(st, settings, encoder=None)
            latency["server"] = time_queries(r, queries, qvec)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result["latency"] = latency
    result["index"] = settings.index
    result["machine"]["load_average_end"] = os.getloadavg()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cranfield")
    c.add_argument("--data", default=str(SHARED / "cranfield"))
    c.add_argument("--depth", type=int, default=300, help="chunks retrieved per query before MaxP")
    s = sub.add_parser("scale")
    s.add_argument("--chunks", type=int, default=100_000)
    s.add_argument("--queries", type=int, default=200)
    s.add_argument("--workdir")
    s.add_argument("--keep", action="store_true")
    for p in (c, s):
        p.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llmtune.console import quiet_third_party

    quiet_third_party(False)
    result = bench_cranfield(args) if args.what == "cranfield" else bench_scale(args)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
