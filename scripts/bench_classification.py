"""MiniLM classification speed: llmtune against the HF Trainer (+ peft), on SST-2.

The quickstart's setting by default (bundled all-MiniLM-L6-v2, the bundled SST-2 phrases,
batch 32, max_length 64, LoRA r 16 on query/key/value/dense, fp32 on CPU), for `--steps`
steps. Both sides train on llmtune's token ids of the same rows. The HF side is
AutoModelForSequenceClassification (its head reads BERT's pooler, llmtune's head mean-pools:
one more 384x384 layer on the HF side, negligible next to the body). Cases alternate in one
sitting, each in its own process; figures are medians over `--repeats` of the same window.

    python scripts/bench_classification.py [--steps 60] [--repeats 2] [--methods lora,full]
    python scripts/bench_classification.py --bf16 --methods lora    # bf16 autocast vs fp32 on a CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import ROOT, emit, machine, run_worker, summarise, table  # noqa: E402
from bench_sft import StepClock  # noqa: E402

LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["query", "key", "value", "dense"]}


def cases(methods: list[str], bf16: bool = False) -> list[dict]:
    """`bf16`: llmtune only, fp32 against bf16 autocast on the CPU (`--bf16`)."""
    c = []
    for m in methods:
        if bf16:
            c += [{"name": f"llmtune-{m}", "tool": "llmtune", "method": m},
                  {"name": f"llmtune-{m}-bf16", "tool": "llmtune", "method": m, "precision": "bf16",
                   "vs": [f"llmtune-{m}"]}]
            continue
        c += [{"name": f"hf-{m}", "tool": "hf", "method": m},
              {"name": f"hf-{m}-gbl", "tool": "hf", "method": m, "group_by_length": True},
              {"name": f"llmtune-{m}", "tool": "llmtune", "method": m, "vs": [f"hf-{m}-gbl", f"hf-{m}"]}]
    return c


def recipe(spec: dict, case: dict) -> dict:
    method = {"name": "full"} if case["method"] == "full" else {"name": "lora", **LORA}
    return {"model": {"name": "minilm", "pooling": "mean"},
            "data": {"task": "classification", "train": {"path": spec["data"], "limit": spec["rows"]},
                     "eval_fraction": 0.0, "columns": {"text": "sentence", "label": "label"},
                     "labels": ["negative", "positive"], "max_length": 64},
            "method": method,
            "train": {"max_steps": spec["steps"], "batch_size": 32, "lr": 1e-3 if case["method"] == "lora" else 1e-4,
                      "log_every": spec["warmup"], "seed": 0, "precision": case.get("precision", "fp32")}}


def worker_llmtune(spec, case):
    from llmtune.console import Reporter
    from llmtune.recipe import recipe_from_dict
    from llmtune.train.session import run_recipe

    out = Path(tempfile.mkdtemp()) / "run"
    run_recipe(recipe_from_dict(recipe(spec, case)), Reporter(quiet=True), output=out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if "tokens" in r and r["step"] > spec["warmup"]]
    return {"tokens": sum(r["tokens"] for r in timed), "seconds": sum(r["tokens"] / r["tokens_per_s"] for r in timed),
            "steps": spec["steps"] - spec["warmup"]}


def worker_hf(spec, case):
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from llmtune.data.pipeline import prepare_data
    from llmtune.models.builtin import minilm_path
    from llmtune.models.load import load_tokenizer
    from llmtune.recipe import recipe_from_dict

    r = recipe_from_dict(recipe(spec, case)).recipe
    tok = load_tokenizer("minilm")
    rows = prepare_data(r.data, tok).train
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    if case["method"] == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                 target_modules=LORA["target_modules"], task_type="SEQ_CLS"))
    clock = StepClock(spec["warmup"])

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, *a, **kw):
            clock.count(inputs)
            return super().training_step(model, inputs, *a, **kw)

    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=32, max_steps=spec["steps"],
                             learning_rate=r.train.lr, logging_steps=10_000, save_strategy="no", report_to="none",
                             use_cpu=True, seed=0, remove_unused_columns=False, dataloader_num_workers=0,
                             train_sampling_strategy="group_by_length" if case.get("group_by_length") else "random")
    ds = Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["label"]} for e in rows])
    trainer = CountingTrainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok),
                              callbacks=[clock.callback()])
    trainer.train()
    return {"tokens": clock.tokens, "seconds": clock.end - clock.start, "steps": spec["steps"] - spec["warmup"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--methods", default="lora,full")
    p.add_argument("--bf16", action="store_true", help="llmtune fp32 against bf16 autocast instead of the HF peers")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.worker[0]).read_text())
        case = next(c for c in spec["cases"] if c["name"] == args.worker[1])
        return emit({"llmtune": worker_llmtune, "hf": worker_hf}[case["tool"]](spec, case))
    work = Path(tempfile.mkdtemp(prefix="bench-cls-"))
    chosen = cases(args.methods.split(","), args.bf16)
    spec = {"data": str(ROOT / "recipes" / "data" / "sst2_train.tsv"), "rows": args.rows, "steps": args.steps,
            "warmup": args.warmup, "cases": chosen}
    (work / "spec.json").write_text(json.dumps(spec))
    runs = {c["name"]: [] for c in chosen}
    for repeat in range(args.repeats):
        for c in chosen:
            r = run_worker([str(Path(__file__).resolve()), "--worker", str(work / "spec.json"), c["name"]])
            runs[c["name"]].append(r)
            brief = f"{r['tokens'] / r['seconds']:,.0f} tok/s" if "error" not in r else "ERROR " + r["error"][-300:]
            print(f"[{repeat + 1}/{args.repeats}] {c['name']}: {brief}", file=sys.stderr, flush=True)
    rows = [(c["name"], summarise(runs[c["name"]])) for c in chosen]
    header = (f"MiniLM SST-2 classification: {args.rows} rows, batch 32, max_length 64, {args.steps} steps "
              f"({args.warmup} warm-up), median of {args.repeats}; {machine()}")
    md = header + "\n\n" + table(rows, [(c["name"], ref) for c in chosen for ref in c.get("vs", [])])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(md + "\n")
        (args.out / "results.json").write_text(json.dumps({"header": header, "cases": dict(rows), "runs": runs}))
    print(md)


if __name__ == "__main__":
    main()
