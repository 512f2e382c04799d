"""Regenerate the comparison in docs/methods.md: every number and figure comes from
`llmtune compare` (its JSON output and plots), three seeds, settings stated below.

Machine of the documented run: see docs/methods.md (2 CPU cores, AMD EPYC, torch CPU). The
defaults are sized for a 45-minute exclusive slot there (about 35 minutes estimated from
earlier single runs; the measured time of each group is printed as it ends and saved in
OUT/seconds.json and OUT/summary.json). Take the CPU for yourself while it runs:

    flock -x /tmp/llmtune-cpu.lock .venv/bin/python scripts/compare_methods.py --threads 2
    .venv/bin/python scripts/compare_methods.py --tiny --out /tmp/cm     # checks the script (minutes)

Groups (each one `llmtune compare --recipes ...` over recipe variants written to OUT/recipes/,
run directories under OUT/<group>/runs/; rerunning reuses every finished run):

- sst2: MiniLM on SST-2, the first --rows (1,000) bundled training phrases, 1 epoch (32 steps),
  batch 32, max_length 64, accuracy on the 872 GLUE dev sentences. Prefix tuning and soft prompts with
  5/20/50 virtual tokens (question 1), LoRA ranks 1/4/16/64 (alpha = 2 x rank) and full
  finetuning (question 3). Learning rates and other options: the shipped recipes/sst2-*.yaml.
- efficiency (question 2): accuracy on the first --q2-eval (200) dev sentences against the number of
  labelled examples n (the first n bundled training phrases, a random sample). Linear probe,
  LoRA r16 and full finetuning on MiniLM train for at least --min-steps optimizer steps (batch
  min(32, n), epochs max(1, min_steps x batch / n)), so small n is not starved of updates. In-
  context learning on SmolLM2-135M (the `smollm2-135m` built-in): the n examples are the
  demonstration pool, and each query gets the min(n - 1, --shots) nearest ones (MiniLM
  embeddings; llmtune wants one pool row to spare); n = 0 is zero-shot. Nearest-neighbour prompting has no randomness, so it runs with seed 0
  only and its uncertainty is the binomial standard error of the eval set.
- agnews: MiniLM on AG News (4 classes; recipes/data/agnews_*.tsv): full, LoRA r16, prefix 20
  and the linear probe on the first --agnews-rows (800) training descriptions, accuracy on the
  first --agnews-eval (500) of the 1,000 bundled test descriptions (106-145 per class). (Soft prompts, the slowest per token on these ~45-token texts,
  are left to the SST-2 group to keep the whole script inside its slot.)

Outputs: OUT/<group or question>/table.{md,csv,json} and compare's plots, OUT/summary.json,
OUT/tables.md (compare's full tables), OUT/doc_tables.md (the columns the docs quote), and the figures under --figures (docs/figures/methods).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_methods import machine  # noqa: E402  (same machine description as the method benchmark)
from methods_figures import analysis, doc_table, draw_figures, q2_tables  # noqa: E402

SMOLLM2 = "smollm2-135m"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "compare-methods")
    p.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures" / "methods")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rows", type=int, default=1000, help="SST-2 training rows for questions 1 and 3")
    p.add_argument("--sst2-eval", type=int, default=None, help="dev sentences scored in the sst2 group (all 872)")
    p.add_argument("--virtual-tokens", default="5,20,50")
    p.add_argument("--ranks", default="1,4,16,64")
    p.add_argument("--sizes", default="8,32,128,512,2000", help="labelled examples n for question 2 (0 is added)")
    p.add_argument("--q2-eval", type=int, default=200, help="dev sentences scored in question 2")
    p.add_argument("--min-steps", type=int, default=32)
    p.add_argument("--shots", type=int, default=4, help="most demonstrations per prompt")
    p.add_argument("--agnews-rows", type=int, default=800)
    p.add_argument("--agnews-eval", type=int, default=500, help="AG News test rows scored (the first 500 of 1,000)")
    p.add_argument("--smollm2", choices=("auto", "on", "off"), default="auto",
                   help="in-context learning on SmolLM2 (auto: when the built-in exists)")
    p.add_argument("--smollm2-model", default=SMOLLM2, help="model.name for the SmolLM2 rows")
    p.add_argument("--smollm2-finetune", action="store_true", help="also LoRA-finetune SmolLM2 on the largest "
                   "n (same model as the prompted rows; ~4 min per seed on 2 cores, beyond the hour budget)")
    p.add_argument("--groups", default="sst2,efficiency,agnews")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs")
    p.add_argument("--force", action="store_true", help="pass --force to llmtune compare (runs whose "
                   "manifests predate eval_identity)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes, to check the script in minutes")
    args = p.parse_args(argv)
    if args.tiny:
        args.seeds, args.rows, args.sst2_eval, args.virtual_tokens, args.ranks = "0,1", 64, 32, "2,4", "1,4"
        args.sizes, args.q2_eval, args.min_steps, args.shots = "8,32", 16, 2, 2
        args.agnews_rows, args.agnews_eval = 64, 32
    return args


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def smollm2_enabled(args) -> bool:
    if args.smollm2 != "auto":
        return args.smollm2 == "on"
    if args.smollm2_model != SMOLLM2:
        return True
    from llmtune.models.builtin import BUILTIN_NAMES

    return SMOLLM2 in BUILTIN_NAMES


# --- recipe variants -----------------------------------------------------------------

def variant(base: Path, stem: str, edits: dict, folder: Path) -> Path:
    """OUT/recipes/<stem>.yaml: `base` with dotted-key edits, data paths made absolute."""
    raw = yaml.safe_load(base.read_text())
    for key, value in edits.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {} if node.get(part) is None else {"path": node[part]}
            node = node[part]
        node[last] = value
    for split in ("train", "eval"):
        src = raw["data"].get(split)
        if isinstance(src, str):
            raw["data"][split] = src = {"path": src}
        if isinstance(src, dict) and src.get("path") and not Path(src["path"]).is_absolute():
            src["path"] = str((base.parent / src["path"]).resolve())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.yaml"
    path.write_text(f"# written by scripts/compare_methods.py from {base.relative_to(ROOT)}\n"
                    + yaml.safe_dump(raw, sort_keys=False))
    return path


def shared(rows: int | None, eval_limit: int | None, max_length: int, batch: int = 32, epochs: float = 1) -> dict:
    # log_every 4: the recipes' 50 is longer than these runs, and the learning curves need points.
    return {"data.train.limit": rows, "data.max_length": max_length, "train.epochs": epochs,
            "train.batch_size": batch, "train.max_steps": None, "train.save_every": None,
            "train.eval_every": None, "train.log_every": 4, "eval.limit": eval_limit}


def sst2_recipes(args, folder: Path) -> dict[str, list[Path]]:
    base = shared(args.rows, args.sst2_eval, 64)
    q1 = [variant(RECIPES / f"sst2-{m}.yaml", f"sst2-{m}-vt{v}", {**base, "method.num_virtual_tokens": v}, folder)
          for m in ("prefix", "soft-prompt") for v in ints(args.virtual_tokens)]
    q3 = [variant(RECIPES / "sst2-lora.yaml", f"sst2-lora-r{r}", {**base, "method.r": r, "method.alpha": 2 * r},
                  folder) for r in ints(args.ranks)]
    q3.append(variant(RECIPES / "sst2-full.yaml", "sst2-full", base, folder))
    return {"q1": q1, "q3": q3}


def efficiency_recipes(args, folder: Path, icl: bool) -> dict[str, list[Path]]:
    trained = []
    for n in ints(args.sizes):
        batch = min(32, n)
        epochs = max(1, round(args.min_steps * batch / n))
        edits = shared(n, args.q2_eval, 64, batch=batch, epochs=epochs)
        probe = {k: v for k, v in edits.items() if not k.startswith("train.")}  # closed form: no steps
        trained.append(variant(RECIPES / "sst2-linear-probe.yaml", f"probe-n{n}", probe, folder))
        trained.append(variant(RECIPES / "sst2-lora.yaml", f"lora-n{n}", edits, folder))
        trained.append(variant(RECIPES / "sst2-full.yaml", f"full-n{n}", edits, folder))
    if icl and args.smollm2_finetune:
        n = max(ints(args.sizes))
        edits = {**shared(n, args.q2_eval, 64), "model.name": args.smollm2_model, "model.pooling": "last"}
        trained.append(variant(RECIPES / "sst2-lora.yaml", f"smollm2-lora-n{n}",
                               {**edits, "method.target_modules": "all-linear"}, folder))
    prompted = []
    if icl:
        for n in [0, *ints(args.sizes)]:
            # llmtune asks for k + 1 distinct pool rows (a query is never its own demonstration).
            edits = {"model.name": args.smollm2_model, "data.train.limit": max(n, 1), "eval.limit": args.q2_eval,
                     "eval.shots": max(0, min(n - 1, args.shots))}
            prompted.append(variant(RECIPES / "smollm2-icl-nearest-sst2.yaml", f"icl-n{n}", edits, folder))
    return {"trained": trained, "icl": prompted}


def agnews_recipes(args, folder: Path) -> list[Path]:
    data = yaml.safe_load((RECIPES / "agnews-lora.yaml").read_text())["data"]
    data = {f"data.{k}": (str((RECIPES / v).resolve()) if k in ("train", "eval") else v) for k, v in data.items()}
    base = {**data, **shared(args.agnews_rows, args.agnews_eval, data["data.max_length"])}
    out = [variant(RECIPES / "sst2-full.yaml", "agnews-full", base, folder),
           variant(RECIPES / "agnews-lora.yaml", "agnews-lora", base, folder),
           variant(RECIPES / "sst2-prefix.yaml", "agnews-prefix", base, folder),
           variant(RECIPES / "sst2-linear-probe.yaml", "agnews-linear-probe",
                   {k: v for k, v in base.items() if not k.startswith("train.")}, folder)]
    return out


# --- llmtune compare -----------------------------------------------------------------

def compare(args, paths: list[Path], out: Path, *, recipes: bool, seeds: str | None = None,
            baseline: str | None = None) -> dict:
    cmd = [sys.executable, "-m", "llmtune", "compare", *map(str, paths), "--out", str(out), "--json"]
    if recipes:
        cmd += ["--recipes", "--seeds", seeds or args.seeds]
    if baseline:
        cmd += ["--baseline", baseline]
    if args.force:
        cmd.append("--force")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    print(f"[compare_methods] llmtune compare -> {out}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"llmtune compare exited {proc.returncode} for {out} (its message is above)")
    return json.loads(proc.stdout)


def run_dirs(doc: dict, names: list[str]) -> list[str]:
    return [run for row in doc["rows"] if row["name"] in names for run in row["runs"]]


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    out, groups = args.out.resolve(), set(args.groups.split(","))
    out.mkdir(parents=True, exist_ok=True)
    folder = out / "recipes"
    icl = smollm2_enabled(args)
    docs: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    load_before = os.getloadavg()[0]

    def timed(name, fn):
        t = time.perf_counter()
        docs[name] = fn()
        seconds[name] = time.perf_counter() - t
        # Written as each group ends, so a run stopped at a deadline still says how long
        # every finished group took (a rerun that reuses the runs would time only the reuse).
        (out / "seconds.json").write_text(json.dumps(seconds, indent=2) + "\n")
        print(f"[compare_methods] {time.strftime('%H:%M:%S')} {name} done in {seconds[name] / 60:.1f} min "
              f"({(time.perf_counter() - started) / 60:.1f} min so far)", file=sys.stderr, flush=True)

    if "sst2" in groups:
        sst2 = sst2_recipes(args, folder)
        timed("sst2", lambda: compare(args, sst2["q1"] + sst2["q3"], out / "sst2", recipes=True,
                                      baseline="sst2-full"))
        stems = {k: [p.stem for p in v] for k, v in sst2.items()}
        vts = ints(args.virtual_tokens)
        timed("q1", lambda: compare(args, run_dirs(docs["sst2"], stems["q1"]), out / "q1", recipes=False,
                                    baseline=f"sst2-prefix-vt{vts[len(vts) // 2]}"))
        timed("q3", lambda: compare(args, run_dirs(docs["sst2"], stems["q3"]), out / "q3", recipes=False,
                                    baseline="sst2-full"))
    if "efficiency" in groups:
        eff = efficiency_recipes(args, folder, icl)
        timed("efficiency-trained", lambda: compare(args, eff["trained"], out / "efficiency-trained",
                                                    recipes=True))
        runs = run_dirs(docs["efficiency-trained"], [p.stem for p in eff["trained"]])
        if icl:
            # Nearest-neighbour prompting is deterministic: one seed says all there is.
            timed("efficiency-icl", lambda: compare(args, eff["icl"], out / "efficiency-icl", recipes=True,
                                                    seeds="0"))
            runs += run_dirs(docs["efficiency-icl"], [p.stem for p in eff["icl"]])
        timed("q2", lambda: compare(args, runs, out / "q2", recipes=False, baseline="icl-n0" if icl else None))
    if "agnews" in groups:
        ag = agnews_recipes(args, folder)
        timed("agnews", lambda: compare(args, ag, out / "agnews", recipes=True, baseline="agnews-full"))

    total = time.perf_counter() - started
    setting = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    summary = {"machine": machine(), "setting": setting, "smollm2": icl, "seconds": seconds,
               "total_seconds": total, "load_before": load_before, "load_after": os.getloadavg()[0],
               "analysis": analysis(docs, ints(args.virtual_tokens), ints(args.ranks), ints(args.sizes))}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "tables.md").write_text("".join(f"## {name}\n\n{(out / name / 'table.md').read_text()}\n"
                                           for name in ("q1", "q3", "q2", "agnews", "sst2") if name in docs))
    (out / "doc_tables.md").write_text("".join(f"## {name}\n\n{doc_table(docs[name])}\n"
                                               for name in ("q1", "q3", "q2", "agnews") if name in docs)
                                       + (f"## q2 by n\n\n{q2_tables(summary['analysis']['q2'])}"
                                          if "q2" in summary["analysis"] else ""))
    figures = draw_figures(docs, summary["analysis"], args.figures)
    for name, source in (("q3_metric_vs_params", "q3/metric_vs_params.png"), ("q3_peak_memory", "q3/peak_memory.png"),
                         ("q1_metric_vs_params", "q1/metric_vs_params.png"),
                         ("agnews_metric_vs_params", "agnews/metric_vs_params.png"),
                         ("agnews_metric_vs_time", "agnews/metric_vs_time.png"),
                         ("sst2_learning_curves", "sst2/learning_curves.png")):
        if (out / source).exists():
            args.figures.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / source, args.figures / f"{name}.png")
            figures.append(str(args.figures / f"{name}.png"))
    print(json.dumps(summary["analysis"], indent=2, default=str))
    print(f"[compare_methods] {total / 60:.1f} min in all ({', '.join(f'{k} {v / 60:.1f}' for k, v in seconds.items())}); "
          f"figures: {', '.join(figures)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
