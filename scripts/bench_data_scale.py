"""Peak memory against data size: tokenizing, then training one slice of an epoch, at 10k
and 100k synthetic rows (or --rows). Each run is a real `llmtune train` in its own process;
its peak resident set comes from the operating system (wait4's ru_maxrss).

Two runs per size: `cold` (empty cache: read, tokenize, write the cache, train) and `warm`
(the cache from the cold run: open it, train). Training is `--steps` steps of tiny-bert
classification or tiny-llama SFT, so the model's share stays small and the data's shows.

    python scripts/bench_data_scale.py [--rows 10000,100000] [--task classification|sft]
    PYTHONPATH=/path/to/other/checkout python scripts/bench_data_scale.py   # another version
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the movie was a quietly moving portrait of grief and a loud mess of car chases that never "
         "earns its ending but the cast is wonderful and the score lifts every scene it touches").split()


def write_rows(path: Path, n: int, task: str, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        if task == "classification":
            fh.write("sentence\tlabel\n")
            for _ in range(n):
                fh.write(" ".join(rng.choices(WORDS, k=rng.randint(4, 30))) + f"\t{rng.randint(0, 1)}\n")
        else:
            for _ in range(n):
                fh.write(json.dumps({"instruction": " ".join(rng.choices(WORDS, k=rng.randint(3, 12))),
                                     "output": " ".join(rng.choices(WORDS, k=rng.randint(3, 30)))}) + "\n")


def recipe(data: Path, task: str, steps: int) -> dict:
    if task == "classification":
        model, data_section = "tiny-bert", {"task": "classification", "train": str(data), "eval_fraction": 0.0,
                                            "columns": {"text": "sentence", "label": "label"}, "max_length": 64}
    else:
        model, data_section = "tiny-llama", {"task": "sft", "train": str(data), "eval_fraction": 0.0,
                                             "max_length": 128}
    return {"model": {"name": model}, "data": data_section, "method": {"name": "full"},
            "train": {"max_steps": steps, "batch_size": 16, "log_every": steps}}


def run(recipe_path: Path, out: Path, cache: Path) -> dict:
    import yaml  # noqa: F401  (the recipe is already written)

    env = {**os.environ, "LLMTUNE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "llmtune", "train", str(recipe_path), "--output", str(out),
                             "--overwrite"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"llmtune train failed:\n{err[-2000:]}")
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": time.perf_counter() - start}


def main(argv=None) -> None:
    import yaml

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="10000,100000")
    p.add_argument("--task", choices=["classification", "sft"], default="classification")
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results = {}
    for n in map(int, args.rows.split(",")):
        data = work / (f"rows-{n}.tsv" if args.task == "classification" else f"rows-{n}.jsonl")
        write_rows(data, n, args.task)
        path = work / f"recipe-{n}.yaml"
        path.write_text(yaml.safe_dump(recipe(data, args.task, args.steps)))
        cache = work / f"cache-{n}"
        results[n] = {"cold": run(path, work / f"run-{n}", cache), "warm": run(path, work / f"run-{n}", cache)}
        print(f"{n} rows: {results[n]}", file=sys.stderr, flush=True)
    sizes = sorted(results)
    print(f"| rows | cold peak RSS MiB | warm peak RSS MiB | cold wall s |\n| --- | --- | --- | --- |")
    for n in sizes:
        r = results[n]
        print(f"| {n:,} | {r['cold']['peak_rss_mb']:,.0f} | {r['warm']['peak_rss_mb']:,.0f} | {r['cold']['wall_s']:.1f} |")
    if len(sizes) > 1:
        a, b = results[sizes[0]], results[sizes[-1]]
        print(f"\ngrowth {sizes[0]:,} -> {sizes[-1]:,} rows: cold {b['cold']['peak_rss_mb'] / a['cold']['peak_rss_mb']:.2f}x, "
              f"warm {b['warm']['peak_rss_mb'] / a['warm']['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
