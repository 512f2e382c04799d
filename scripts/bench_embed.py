"""Benchmark: `llmtune embed` vs sentence-transformers `encode` on the bundled MiniLM.

Same 10,000 texts, same batch size, same max length (256, MiniLM's sentence-transformers
max_seq_length), same output (mean pooling + L2 normalisation, which the sentence-
transformers model applies as its last module), one process. The two sides alternate
(A B, then B A, ...) for several rounds and the medians are compared, so a shared or
noisy machine slows both alike. Prints sentences/s for both, the ratio and the minimum
cosine similarity between the two outputs; with --cli also times the `llmtune embed`
command once (process start and model load included).

    .venv/bin/python scripts/bench_embed.py                 # 10,000 SST-2 train sentences
    .venv/bin/python scripts/bench_embed.py --n 2000 --rounds 3 --cli
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = [ROOT.parent / "shared" / "data" / "sst2" / "train.tsv", ROOT / "recipes" / "data" / "sst2_train.tsv"]


def read_texts(path: Path, n: int) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as fh:
        next(fh)  # header: sentence<TAB>label
        for line in fh:
            texts.append(line.split("\t")[0])
            if len(texts) == n:
                break
    if len(texts) < n:
        sys.exit(f"{path}: only {len(texts)} texts, asked for {n}")
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", type=Path, default=next((p for p in DATA if p.exists()), DATA[-1]))
    ap.add_argument("--cli", action="store_true", help="also time `llmtune embed` once, end to end")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON document")
    args = ap.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from llmtune.models.encoder import Encoder
    from llmtune.embed.loading import load_for_embedding
    from llmtune.models.builtin import minilm_path

    texts = read_texts(args.data, args.n)
    loaded = load_for_embedding("minilm")
    ours = Encoder(loaded.tokenizer, loaded.body, pooling="mean", normalize=True, max_length=args.max_length,
                   batch_size=args.batch_size)
    device = str(ours.device)
    st = SentenceTransformer(str(minilm_path()), device=device)
    st.max_seq_length = args.max_length

    def run_ours():
        return ours.embed(texts)

    def run_st():
        return st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)

    # Warm-up: first calls pay for lazy initialisation (kernels, allocator, tokenizer caches).
    ours.embed(texts[:256])
    st.encode(texts[:256], batch_size=args.batch_size, show_progress_bar=False)

    rates = {"llmtune": [], "sentence-transformers": []}
    outputs = {}
    sides = [("llmtune", run_ours), ("sentence-transformers", run_st)]
    for r in range(args.rounds):
        for name, fn in (sides if r % 2 == 0 else sides[::-1]):
            t0 = time.perf_counter()
            outputs[name] = fn()
            rates[name].append(len(texts) / (time.perf_counter() - t0))
        if not args.json:
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()), flush=True)

    a = torch.from_numpy(np.asarray(outputs["llmtune"], dtype=np.float32))
    b = torch.from_numpy(np.asarray(outputs["sentence-transformers"], dtype=np.float32))
    cosine = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
    result = {
        "texts": len(texts), "data": str(args.data), "batch_size": args.batch_size, "max_length": args.max_length,
        "rounds": args.rounds, "device": device, "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load_average_1min": os.getloadavg()[0],
        "llmtune_per_s": [round(x, 1) for x in rates["llmtune"]],
        "sentence_transformers_per_s": [round(x, 1) for x in rates["sentence-transformers"]],
        "llmtune_median_per_s": round(statistics.median(rates["llmtune"]), 1),
        "sentence_transformers_median_per_s": round(statistics.median(rates["sentence-transformers"]), 1),
        "ratio_of_medians": round(statistics.median(rates["llmtune"])
                                  / statistics.median(rates["sentence-transformers"]), 3),
        "median_of_round_ratios": round(statistics.median(
            x / y for x, y in zip(rates["llmtune"], rates["sentence-transformers"])), 3),
        "min_cosine": float(cosine.min()),
        "max_abs_diff": float((a - b).abs().max()),
    }
    if args.cli:
        result["cli"] = time_cli(texts, args)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"\n{len(texts):,} texts, batch {args.batch_size}, max length {args.max_length}, {device}, "
          f"{result['torch_threads']} torch threads, load average {result['load_average_1min']:.1f}")
    print(f"llmtune embed          {result['llmtune_median_per_s']:>9,.0f} sentences/s (median of {args.rounds})")
    print(f"sentence-transformers  {result['sentence_transformers_median_per_s']:>9,.0f} sentences/s")
    print(f"ratio                  {result['ratio_of_medians']:>9.3f}  (median of per-round ratios "
          f"{result['median_of_round_ratios']:.3f})")
    print(f"min cosine similarity  {result['min_cosine']:.9f}  (max abs difference {result['max_abs_diff']:.2e})")
    if args.cli:
        c = result["cli"]
        print(f"llmtune embed CLI      {c['rows_per_s']:>9,.0f} sentences/s embedding; {c['wall_seconds']:.1f} s "
              f"end to end (start-up and model load {c['load_seconds']:.1f} s)")


def time_cli(texts: list[str], args) -> dict:
    """One `llmtune embed` process over the same texts written to a .txt file."""
    exe = Path(sys.executable).parent / "llmtune"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "texts.txt"
        src.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
        cmd = [str(exe), "embed", "minilm", str(src), "--out", str(Path(tmp) / "out.npy"), "--normalize",
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--json"]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if res.returncode != 0:
        return {"error": res.stderr[-2000:]}
    summary = json.loads(res.stdout)
    return {"wall_seconds": round(wall, 2), "load_seconds": summary["load_seconds"],
            "embed_seconds": summary["embed_seconds"], "rows_per_s": summary["rows_per_s"]}


if __name__ == "__main__":
    main()
