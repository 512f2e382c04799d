"""Dense query latency of an embedded store with and without llmtune's Milvus Lite fast path.

Builds (or reuses, with --workdir) a synthetic store through llmtune's own Store code: random
normalised vectors (no embedding model), short texts, one state row per file, then reopens it
and times Store.search_dense (one Milvus request, k=10), the same request with a
hidden-version filter, and Retriever.search (the hidden-version check + search, the path of
`llmtune query` after start-up). The fast path is switched per query through
LLMTUNE_MILVUS_FASTPATH (read on every search), the two alternating, so both see the same
store, caches and machine load.

    PYTHONPATH=. python scripts/bench_fastpath.py --chunks 100000 --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def build(path: Path, chunks: int, dim: int, per_file: int, seed: int) -> None:
    import numpy as np

    from llmtune.index.settings import StoreSettings
    from llmtune.index.store import FileState, Store, parse_location

    rng = np.random.default_rng(seed)
    settings = StoreSettings(model="synthetic", pooling="mean", normalize=True, max_length=256, chunk_tokens=200,
                             overlap=0, dim=dim)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    with Store(parse_location(str(path))) as st:
        st.ensure(settings)
        n_files = -(-chunks // per_file)
        st.put_states([FileState(f"/docs/f{f}.txt", "h", "v1", [], per_file) for f in range(n_files)])
        for start in range(0, chunks, 4096):
            n = min(4096, chunks - start)
            vecs = rng.normal(size=(n, dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            rows = []
            for j in range(n):
                i = start + j
                text = " ".join(words[(i * 7 + t) % len(words)] for t in range(8))
                rows.append({"id": f"f{i // per_file}:v1:{i % per_file}", "vector": vecs[j].tolist(), "text": text,
                             "source": f"/docs/f{i // per_file}.txt", "locator": f"line={i}", "chunk": i % per_file,
                             "start": 0, "end": len(text), "chunk_hash": "x", "version": "v1"})
            st.insert_chunks(rows)


def percentiles(samples: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples)
    return {"p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
            "n": len(ms)}


def measure(path: Path, n_queries: int, dim: int, seed: int) -> dict:
    import numpy as np

    from llmtune.index.milvus_lite_patch import ENV_SWITCH
    from llmtune.index.retrieve import Retriever, open_store, search_params

    rng = np.random.default_rng(seed + 1)
    queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    t0 = time.perf_counter()
    st, settings = open_store(str(path), None, "llmtune")
    out: dict = {"open_s": round(time.perf_counter() - t0, 2), "chunks": None}
    with st:
        out["chunks"] = st.count_chunks()
        r = Retriever(st, settings, encoder=object())
        params = search_params(settings.index, 10)
        hidden = 'version not in ["v0"]'  # what a query sees while an index run hides a version
        cases = {
            "search": lambda v: st.search_dense([v], 10, "", params),
            "search, hidden-version filter": lambda v: st.search_dense([v], 10, hidden, params),
            "check + search": lambda v: r.search([""], 10, "dense", vectors=v[None, :]),
        }
        for name, call in cases.items():
            timings: dict = {"library": [], "fast path": []}
            differ = 0
            for switch in ("0", "1"):  # warm both
                os.environ[ENV_SWITCH] = switch
                call(queries[0])
            for i, v in enumerate(queries):
                order = (("0", "library"), ("1", "fast path")) if i % 2 else (("1", "fast path"), ("0", "library"))
                got = {}
                for switch, label in order:
                    os.environ[ENV_SWITCH] = switch
                    t = time.perf_counter()
                    got[label] = call(v)
                    timings[label].append(time.perf_counter() - t)
                differ += got["library"] != got["fast path"]
            out[name] = {label: percentiles(t) for label, t in timings.items()}
            out[name]["queries whose results differ"] = differ
        os.environ.pop(ENV_SWITCH, None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--per-file", type=int, default=50)
    ap.add_argument("--workdir", help="keep the store here and reuse it on the next run")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-fastpath-"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / f"synthetic{args.chunks}.db"
    result: dict = {}
    try:
        if not store.exists():
            t = time.perf_counter()
            build(store, args.chunks, args.dim, args.per_file, args.seed)
            result["build_s"] = round(time.perf_counter() - t, 1)
        if not args.build_only:
            result.update(measure(store, args.queries, args.dim, args.seed))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
