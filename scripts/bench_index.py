"""Benchmarks of `llmtune index/query` (figures in docs/indexing.md). Not a test.

  bigfile: `llmtune index` on one big plain-text file (default 20 MB): wall time and peak
      RSS of the CLI process. (Retrieval quality on Cranfield: scripts/bench_hybrid.py.)
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


# -- One big file --------------------------------------------------------------------------------
def bench_bigfile(args) -> dict:
    """`llmtune index` on one plain-text file of `--mb` megabytes (synthetic prose, paragraphs of
    20-120 words): wall time and the child process's peak RSS (getrusage of the CLI process)."""
    import resource

    docs, queries, _ = load_cranfield(SHARED / "cranfield")
    chain = Markov(list(docs.values()) + list(queries.values()), seed=0)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-bigfile-"))
    big = work / "big.txt"
    size, parts = 0, []
    while size < args.mb * 1_000_000:
        parts.append(chain.passage(chain.rng.randint(20, 120)))
        size += len(parts[-1]) + 2
    big.write_text("\n\n".join(parts))
    store = work / "big.db"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    seconds, summary = run_cli(["index", str(big), "--store", str(store)], env)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = {"benchmark": "bigfile", "machine": machine(), "file_bytes": big.stat().st_size, "seconds": seconds,
              "peak_rss_mib": round(peak_kib / 1024, 1), "chunks": summary["chunks_in_store"],
              "split": summary["seconds"]}
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return result


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
    c = sub.add_parser("bigfile")
    c.add_argument("--mb", type=float, default=20.0)
    c.add_argument("--workdir")
    c.add_argument("--keep", action="store_true")
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
    result = bench_bigfile(args) if args.what == "bigfile" else bench_scale(args)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
