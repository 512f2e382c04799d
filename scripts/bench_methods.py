"""Every supervised method on SST-2 with the bundled MiniLM, under one shared setting.

Each method trains through llmtune itself (`llmtune train recipes/sst2-<method>.yaml` with
--set overrides for the shared setting), in its own process so that peak memory (the
process's max RSS on CPU, max allocated on a GPU) belongs to that method alone. Recorded:
accuracy on the 872 GLUE dev sentences, trainable parameters, peak memory, training time,
wall time of the whole command (imports, tokenizing, training, final eval, saving) and
training tokens/s (real tokens, mean over the loop's log windows).

What varies per method is only what the literature varies: the learning rate and the
method's own options, both read from its recipe. Methods registered without an sst2 recipe
run with their defaults at --fallback-lr (marked in the table).

    .venv/bin/python scripts/bench_methods.py                       # all, 4,000 rows
    .venv/bin/python scripts/bench_methods.py --rows 1000 --methods lora,adapter --out /tmp/b

Writes OUT/results.json and OUT/results.md and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
# The order the table reads in: the issue's list first, anything registered later after.
PREFERRED = ["full", "frozen-head", "linear-probe", "lora", "prefix", "soft-prompt", "adapter", "ia3"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4000, help="training rows (the first N of the bundled 16,000)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="", help="comma-separated method names (default: every registered "
                   "method that trains classification)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-methods")
    p.add_argument("--fallback-lr", type=float, default=1e-3, help="lr for a method with no sst2 recipe")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (OMP_NUM_THREADS)")
    return p.parse_args(argv)


def classification_methods() -> list[str]:
    from llmtune.methods.registry import all_methods

    names = [n for n, m in all_methods().items() if "classification" in m.tasks]
    return sorted(names, key=lambda n: (PREFERRED.index(n) if n in PREFERRED else len(PREFERRED), n))


def recipe_for(name: str, work: Path, fallback_lr: float) -> tuple[Path, str]:
    """The method's sst2 recipe, or one made from sst2-full.yaml with the method's defaults."""
    path = RECIPES / f"sst2-{name}.yaml"
    if path.exists():
        return path, ""
    raw = yaml.safe_load((RECIPES / "sst2-full.yaml").read_text())
    raw["method"] = {"name": name}
    raw["train"]["lr"] = fallback_lr
    for key in ("train", "eval"):  # keep data paths valid from the temp folder
        raw["data"][key] = str(RECIPES / raw["data"][key])
    made = work / f"sst2-{name}.yaml"
    made.write_text(yaml.safe_dump(raw, sort_keys=False))
    return made, f"no recipe: defaults, lr {fallback_lr:g}"


def run_one(name: str, args, work: Path) -> dict:
    recipe, note = recipe_for(name, work, args.fallback_lr)
    run_dir = args.out / "runs" / name
    overrides = {"data.train.limit": args.rows, "train.epochs": args.epochs, "train.batch_size": args.batch_size,
                 "data.max_length": args.max_length, "train.seed": args.seed, "train.max_steps": "null",
                 "train.save_every": "null", "train.eval_every": "null", "eval.limit": "null"}
    cmd = [sys.executable, "-c", "from llmtune.cli import main; main()", "train", str(recipe), "-o", str(run_dir),
           "--overwrite", "--json"]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    print(f"[bench] {name}: {recipe.name} {note}".rstrip(), file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    row = {"method": name, "recipe": str(recipe.relative_to(ROOT)) if recipe.is_relative_to(ROOT) else None,
           "note": note, "wall_s": wall, "lr": yaml.safe_load(recipe.read_text()).get("train", {}).get("lr")}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"[bench] {name} failed (exit {proc.returncode}): {row['error']}", file=sys.stderr)
        return row
    result = json.loads(proc.stdout)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    rates = [r["tokens_per_s"] for r in _metrics(run_dir) if "tokens_per_s" in r]
    evaluation = result.get("eval") or manifest.get("final_eval") or {}
    row.update({
        "accuracy": evaluation.get("accuracy"),
        "trainable_parameters": manifest.get("trainable_parameters"),
        "trainable_percent": manifest.get("trainable_percent"),
        "peak_memory_mb": manifest.get("peak_memory_mb"),
        "train_s": manifest.get("train_seconds", result.get("train_seconds")),
        "tokens_per_s": sum(rates) / len(rates) if rates else None,
        "steps": result.get("steps"),
    })
    print(f"[bench] {name}: accuracy {row['accuracy']}, {wall:.0f} s", file=sys.stderr, flush=True)
    return row


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "gpu": None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt(v, spec: str, dash: str = "–") -> str:
    return dash if v is None else format(v, spec)


def markdown(rows: list[dict], setting: dict, mach: dict) -> str:
    where = mach["gpu"] or f"{mach['cpus']} CPU cores ({mach['cpu']})"
    threads = f", {setting['threads']} torch thread(s) per run" if setting.get("threads") else ""
    lines = [f"SST-2, MiniLM (all-MiniLM-L6-v2, mean pooling): {setting['rows']:,} training rows, "
             f"{setting['epochs']:g} epoch(s), batch {setting['batch_size']}, max_length {setting['max_length']}, "
             f"seed {setting['seed']}; accuracy on the 872 GLUE dev sentences. Machine: {where}{threads}; load average "
             f"{setting['load_before']:.1f} before, {setting['load_after']:.1f} after.", "",
             "| method | lr | acc % | trainable | % of model | peak MB | train s | wall s | tokens/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {_fmt(r['lr'], 'g')} | failed: {r['error']} | | | | | | |")
            continue
        acc = None if r["accuracy"] is None else 100 * r["accuracy"]
        name = r["method"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {name} | {_fmt(r['lr'], 'g')} | {_fmt(acc, '.1f')} | {_fmt(r['trainable_parameters'], ',')} | "
                     f"{_fmt(r['trainable_percent'], '.3f')} | {_fmt(r['peak_memory_mb'], ',.0f')} | "
                     f"{_fmt(r['train_s'], '.0f')} | {r['wall_s']:.0f} | {_fmt(r['tokens_per_s'], ',.0f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    known = classification_methods()
    names = [n.strip() for n in args.methods.split(",") if n.strip()] or known
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown or non-classification methods: {', '.join(unknown)}; registered: {', '.join(known)}",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    setting = {"rows": args.rows, "epochs": args.epochs, "batch_size": args.batch_size,
               "max_length": args.max_length, "seed": args.seed, "threads": args.threads,
               "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_one(n, args, Path(tmp)) for n in names]
    setting["load_after"] = os.getloadavg()[0]
    mach = machine()
    table = markdown(rows, setting, mach)
    (args.out / "results.json").write_text(json.dumps({"setting": setting, "machine": mach, "results": rows},
                                                      indent=2) + "\n")
    (args.out / "results.md").write_text(table)
    print(table)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
