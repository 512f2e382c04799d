"""Every method that makes sense, for a couple of steps on the bundled real causal LM
(SmolLM2-135M-Instruct), through llmtune's own commands: train, eval, and export.

A smoke check, not a measurement: each run trains 2 optimizer steps on bundled rows
(recipes/data), so the numbers say that the path works end to end on a real Llama-shaped
checkpoint converted from GGUF, not how good the method is. Prints a markdown table
(method, task, what trains, seconds, last training loss, the eval's headline number, the
export form) and exits 1 if any run failed.

  flock -x /tmp/llmtune-cpu.lock python scripts/smollm2_methods.py [--only lora,dpo] [--keep DIR]
About 15 minutes on 2 CPU cores (about 40 s more the first time, converting the GGUF).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "recipes" / "data"
STEPS = {"max_steps": 2, "batch_size": 2, "log_every": 1, "lr": 1.0e-4}

SFT = {"task": "sft", "train": {"path": str(DATA / "alpaca_tiny.json"), "limit": 16}, "eval_fraction": 0.25,
       "max_length": 64}
CLS = {"task": "classification", "train": {"path": str(DATA / "sst2_train.tsv"), "limit": 32},
       "eval": {"path": str(DATA / "sst2_dev.tsv"), "limit": 16}, "columns": {"text": "sentence", "label": "label"},
       "labels": ["negative", "positive"], "max_length": 48}
HH = {"task": "preference", "train": {"path": str(DATA / "hh_rlhf_harmless_64.jsonl"), "limit": 16},
      "eval_fraction": 0.25, "max_length": 128}
DPO = {"task": "preference", "train": {"path": str(DATA / "dpo_en_demo_24.json"), "limit": 12},
       "eval_fraction": 0.25, "max_length": 192, "columns": {"prompt": "conversations"}}
KTO = {"task": "unpaired_preference", "train": {"path": str(DATA / "kto_en_demo_32.json")}, "eval_fraction": 0.25,
       "max_length": 192, "columns": {"messages": "messages", "desirable": "label"}}
PROMPTS = {"task": "prompts", "train": {"path": str(DATA / "hh_rlhf_harmless_64.jsonl"), "limit": 12},
           "eval_fraction": 0.25, "max_length": 128}
LORA = {"r": 8, "alpha": 16, "target_modules": "all-linear"}

# name -> (data, method section, model extras, train extras, eval extras)
CASES = {
    "full": (SFT, {"name": "full"}, {}, {"lr": 1.0e-5}, {}),
    "frozen-head-last2": (CLS, {"name": "frozen-head", "train_last_layers": 2}, {"pooling": "last"}, {}, {}),
    "lora": (SFT, {"name": "lora", **LORA}, {}, {}, {}),
    "dora": (SFT, {"name": "lora", **LORA, "dora": True}, {}, {}, {}),
    "lora-classify-last": (CLS, {"name": "lora", **LORA}, {"pooling": "last"}, {}, {}),
    "ia3": (SFT, {"name": "ia3"}, {}, {"lr": 1.0e-3}, {}),
    "prefix": (SFT, {"name": "prefix", "num_virtual_tokens": 8}, {}, {"lr": 1.0e-3}, {}),
    "soft-prompt": (SFT, {"name": "soft-prompt", "num_virtual_tokens": 8, "init": "vocab"}, {}, {"lr": 1.0e-2}, {}),
    "adapter": (SFT, {"name": "adapter", "bottleneck_size": 32}, {}, {"lr": 1.0e-3}, {}),
    "linear-probe-last": (CLS, {"name": "linear-probe"}, {"pooling": "last"}, {}, {}),
    "linear-probe-mean": (CLS, {"name": "linear-probe"}, {"pooling": "mean"}, {}, {}),
    "reward": (HH, {"name": "reward", "peft": LORA}, {}, {}, {}),
    "dpo": (DPO, {"name": "dpo", "peft": LORA}, {}, {}, {}),
    "kto": (KTO, {"name": "kto", "peft": LORA}, {}, {}, {}),
    "orpo": (HH, {"name": "orpo", "peft": LORA}, {}, {}, {}),
    "rl-rloo-reward-model": (PROMPTS, {"name": "rl", "algorithm": "rloo", "reward_model": "RUNS/reward",
                                       "num_generations": 2, "max_completion_length": 16, "peft": LORA},
                             {}, {"batch_size": 4}, {"batch_size": 4}),
    "rl-grpo-rule": (PROMPTS, {"name": "rl", "algorithm": "grpo", "num_generations": 2, "max_completion_length": 16,
                               "reward_function": "llmtune.methods.preference.rewards:char_fraction",
                               "reward_kwargs": {"char": "e"}, "peft": LORA}, {}, {"batch_size": 4},
                     {"batch_size": 4}),
}
HEADLINE = ("accuracy", "rewards/accuracies", "mean_reward", "f1", "loss")
SFT_EVAL = {"generation": {"max_new_tokens": 16}, "limit": 4}


def llmtune(*args: str) -> tuple[int, dict | None, str]:
    proc = subprocess.run([sys.executable, "-m", "llmtune", *args, "--json"], capture_output=True, text=True,
                          cwd=ROOT)
    try:
        out = json.loads(proc.stdout) if proc.returncode == 0 else None
    except json.JSONDecodeError:
        out = None
    return proc.returncode, out, proc.stderr


def recipe_for(name: str, runs: Path) -> dict:
    data, method, model, train, ev = CASES[name]
    method = json.loads(json.dumps(method).replace("RUNS/", f"{runs}/"))
    recipe = {"model": {"name": "smollm2-135m", **model}, "data": data, "method": method,
              "train": {**STEPS, **train}}
    recipe["eval"] = {**(SFT_EVAL if data["task"] == "sft" else {}), **ev}
    return recipe


def headline(result: dict | None) -> str:
    if not result:
        return "-"
    for key in HEADLINE:
        if isinstance(result.get(key), (int, float)):
            return f"{key} {result[key]:.3f}"
    return "-"


def last_loss(run: Path) -> float | None:
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    return losses[-1] if losses else None


def export(run: Path, out: Path, task: str) -> str:
    """Merged where the method can merge (else adapter-only); a merged causal LM must load
    with plain transformers."""
    code, exported, err = llmtune("export", str(run), "--out", str(out), "--overwrite", "--merge")
    if code == 2:
        code, exported, err = llmtune("export", str(run), "--out", str(out), "--overwrite")
    if code != 0:
        return f"export exit {code}"
    if exported["form"] == "merged" and task != "classification":
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(out)
        return "merged (loads in transformers)"
    return exported["form"]


def run_case(name: str, runs: Path) -> dict:
    recipe = runs / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump(recipe_for(name, runs), sort_keys=False))
    run = runs / name
    started = time.perf_counter()
    code, trained, err = llmtune("train", str(recipe), "--output", str(run), "--overwrite")
    row = {"method": name, "task": CASES[name][0]["task"], "seconds": time.perf_counter() - started}
    if code != 0:
        return {**row, "status": f"train exit {code}: {err.strip().splitlines()[-1] if err.strip() else ''}"}
    row["loss"] = last_loss(run)
    row["trainable"] = trained.get("trainable_parameters") if trained else None
    code, evaluated, err = llmtune("eval", str(run))
    row["eval"] = headline(evaluated) if code == 0 else f"eval exit {code}: {err.strip().splitlines()[-1]}"
    row["export"] = export(run, runs / f"{name}-export", CASES[name][0]["task"])
    row["status"] = "ok" if not any(str(row[k]).startswith(("eval exit", "export exit")) for k in ("eval", "export")) \
        else "failed"
    row["seconds"] = time.perf_counter() - started
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated case names (default: all)")
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder (default: a temporary one)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CASES)
    if "rl-rloo-reward-model" in names and "reward" not in names:
        names.insert(names.index("rl-rloo-reward-model"), "reward")  # its reward model
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.keep or Path(tmp)
        runs.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in names:
            rows.append(run_case(name, runs))
            print(json.dumps(rows[-1], default=str), file=sys.stderr, flush=True)
    print("| method | task | trainable | s | train loss | eval | export | status |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        loss = f"{r['loss']:.3f}" if isinstance(r.get("loss"), (int, float)) else "-"
        trainable = f"{r['trainable']:,}" if isinstance(r.get("trainable"), int) else "-"
        print(f"| {r['method']} | {r['task']} | {trainable} | {r['seconds']:.0f} | {loss} | {r.get('eval', '-')} | "
              f"{r.get('export', '-')} | {r['status']} |")
    sys.exit(0 if all(r["status"] == "ok" for r in rows) else 1)


if __name__ == "__main__":
    main()
