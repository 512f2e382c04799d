"""Causal-LM SFT speed: llmtune against the HF Trainer (+ peft) and trl's SFTTrainer.

Same model (built from a config, random weights), same token ids (llmtune's own encoding
of the same rows, handed to the peers pre-tokenized), same batch size, sequence length,
precision, optimizer (fused AdamW) and LoRA settings (r 16, alpha 32, dropout 0.05, every
linear layer). Cases alternate in one sitting, each in its own process, `--repeats` times;
every figure is the median over repeats of the same window (the steps after `--warmup`).
Tokens are real tokens: padding is not counted, packed rows are all real.

    python scripts/bench_sft.py                          # CPU: small Llama shape, alpaca demo
    python scripts/bench_sft.py --shape smollm2-135m     # the smollm2-135m built-in (branch smollm2)
    python scripts/bench_sft.py --mode gpu               # 1.1B Llama shape, bf16 (see bench_gpu.sh)
    python scripts/bench_sft.py --mode dry-run           # every case, tiny shape, 4 steps: does it all run?
    python scripts/bench_sft.py --mode cpu-bf16 --shape smollm2-135m   # bf16 autocast vs fp32 on a CPU

Peers: `hf` = transformers.Trainer + peft as a user writes it (DataCollatorForSeq2Seq,
defaults; `-gbl`: length-grouped batches, which transformers 5 spells
train_sampling_strategy="group_by_length", formerly group_by_length=True), `trl` = trl.SFTTrainer (`-packed`: packing=True,
its best-fit-decreasing, padding-free packing). trl's own defaults turn gradient
checkpointing on; here every CPU case runs without it (say so when quoting trl) and the
GPU mode adds `-gc` cases with it on for both.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import ROOT, emit, machine, run_worker, summarise, table  # noqa: E402

SHARED_ALPACA = ROOT.parent / "shared" / "data" / "llamafactory_demo" / "alpaca_en_demo.json"
SHARED_C4 = ROOT.parent / "shared" / "data" / "llamafactory_demo" / "c4_demo.jsonl"
SHAPES = {
    # ~9M parameters: 6 blocks of hidden 256 and a vocabulary of 8,192 (the output layer is
    # about a quarter of the FLOPs, as in small real LMs).
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4,
                  num_key_value_heads=2),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    # TinyLlama-1.1B's shape, vocabulary 32,000 (the tokenizer uses the first 8,192 ids).
    "llama-1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                       num_key_value_heads=4, vocab_size=32000),
}
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}


def bf16_cases() -> list[dict]:
    """`--mode cpu-bf16`: bf16 autocast on the CPU against fp32, llmtune and the HF Trainer
    (bf16=True, use_cpu=True) at the same batches (`-same`: random order, no length grouping,
    full logits, as the Trainer's), LoRA."""
    c = []
    for p in ("fp32", "bf16"):
        c += [{"name": f"hf-lora-{p}", "tool": "hf", "method": "lora", "precision": p},
              {"name": f"llmtune-lora-same-{p}", "tool": "llmtune", "method": "lora", "precision": p,
               "group_by_length": False, "chunked_loss": False, "vs": [f"hf-lora-{p}"]},
              {"name": f"llmtune-lora-{p}", "tool": "llmtune", "method": "lora", "precision": p}]
    for case in c:
        if case["precision"] == "bf16":
            case.setdefault("vs", []).append(case["name"].replace("bf16", "fp32"))
    return c


def cases(mode: str) -> list[dict]:
    """The cases of one sitting, in the order they alternate; `vs` names the ratios' baselines.
    `-same`: llmtune on the HF Trainer's batches (random order, no length grouping, full
    logits): the step itself compared."""
    if mode == "cpu-bf16":
        return bf16_cases()
    c = []
    for method in ("full", "lora"):
        c += [
            {"name": f"hf-{method}", "tool": "hf", "method": method},
            {"name": f"hf-{method}-gbl", "tool": "hf", "method": method, "group_by_length": True},
            {"name": f"llmtune-{method}-same", "tool": "llmtune", "method": method, "group_by_length": False,
             "chunked_loss": False, "vs": [f"hf-{method}"]},
            {"name": f"llmtune-{method}", "tool": "llmtune", "method": method,
             "vs": [f"hf-{method}-gbl", f"hf-{method}", f"trl-{method}"]},
            {"name": f"llmtune-{method}-packed", "tool": "llmtune", "method": method, "packing": True,
             "vs": [f"hf-{method}-gbl", f"trl-{method}-packed"]},
            {"name": f"trl-{method}", "tool": "trl", "method": method},
            {"name": f"trl-{method}-packed", "tool": "trl", "method": method, "packing": True},
            # One switch each against llmtune's defaults (docs/performance.md's switch table).
            {"name": f"llmtune-{method}-nochunk", "tool": "llmtune", "method": method, "chunked_loss": False,
             "ablation": True, "vs": [f"llmtune-{method}"]},
            {"name": f"llmtune-{method}-nogroup", "tool": "llmtune", "method": method, "group_by_length": False,
             "ablation": True, "vs": [f"llmtune-{method}"]},
            {"name": f"llmtune-{method}-gc", "tool": "llmtune", "method": method, "gc": True,
             "ablation": True, "vs": [f"llmtune-{method}"]},
            {"name": f"llmtune-{method}-compile", "tool": "llmtune", "method": method, "compile": True,
             "ablation": True, "vs": [f"llmtune-{method}"]},
            {"name": f"llmtune-{method}-fastdrop", "tool": "llmtune", "method": method, "fast_dropout": True,
             "ablation": True, "vs": [f"llmtune-{method}", f"hf-{method}-gbl"]},
            {"name": f"llmtune-{method}-torchdrop", "tool": "llmtune", "method": method, "fast_dropout": False,
             "ablation": True, "vs": [f"llmtune-{method}"]},
            {"name": f"llmtune-{method}-nofuse", "tool": "llmtune", "method": method, "fused_forward": False,
             "ablation": True, "vs": [f"llmtune-{method}"]},
        ]
    if mode == "gpu":  # the single-switch cases are CPU ones, run only when --cases names them
        c = [case for case in c if not case.get("ablation")]
        for case in c:
            if case["tool"] == "llmtune":
                case["compile"] = True
        for method in ("full", "lora"):
            c += [{"name": f"trl-{method}-packed-gc", "tool": "trl", "method": method, "packing": True, "gc": True},
                  {"name": f"llmtune-{method}-packed-gc", "tool": "llmtune", "method": method, "packing": True,
                   "gc": True, "compile": True, "vs": [f"trl-{method}-packed-gc"]}]
    return c


# -- preparation (parent) -------------------------------------------------------------------
def prepare(args, work: Path) -> dict:
    """A model folder (config + random weights + tokenizer) and the SFT rows, once."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    rows = load_rows(args)
    data = work / "sft.json"
    data.write_text(json.dumps(rows))
    if args.shape == "smollm2-135m":
        from llmtune.models.load import resolve_source

        model_dir = resolve_source("smollm2-135m")
        if model_dir == "smollm2-135m":
            raise SystemExit("--shape smollm2-135m needs the smollm2-135m built-in (branch smollm2)")
        return {"model": str(model_dir), "data": str(data)}
    tok = train_tokenizer(rows, work / "model")
    shape = dict(SHAPES[args.shape])
    shape.setdefault("vocab_size", len(tok))
    config = LlamaConfig(**shape, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(work / "model")
    return {"model": str(work / "model"), "data": str(data)}


def load_rows(args) -> list[dict]:
    if args.data == "c4":  # long raw text, as instruction-free rows of max_length tokens
        docs = [json.loads(line)["text"] for line in SHARED_C4.read_text().splitlines() if line.strip()]
        text = " ".join(docs)
        words = text.split()
        per = args.max_length  # words per row; a BPE word is >= 1 token, so rows fill max_length
        rows = [{"instruction": "Continue.", "output": " ".join(words[i:i + per])}
                for i in range(0, len(words) - per, per)]
    else:
        source = SHARED_ALPACA if SHARED_ALPACA.exists() else ROOT / "recipes" / "data" / "alpaca_tiny.json"
        rows = json.loads(source.read_text())
    need = args.batch_size * (args.steps + 1)
    while len(rows) < need:
        rows = rows + rows
    return rows


def train_tokenizer(rows: list[dict], out: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=8192, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [" ".join(str(r.get(k, "")) for k in ("instruction", "input", "output")) for r in rows]
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return fast


# -- workers (one process per case) -----------------------------------------------------------
def encoded(spec: dict) -> list[dict]:
    """llmtune's encoding of the rows: the token ids every tool trains on."""
    from llmtune.data.pipeline import prepare_data
    from llmtune.models.load import load_tokenizer
    from llmtune.recipe import recipe_from_dict

    recipe = recipe_from_dict(llmtune_recipe(spec, {"name": "x", "tool": "llmtune", "method": "full"})).recipe
    return prepare_data(recipe.data, load_tokenizer(spec["model"])).train


def llmtune_recipe(spec: dict, case: dict) -> dict:
    method = {"name": "full"} if case["method"] == "full" else {"name": "lora", **LORA, "target_modules": "all-linear"}
    recipe = {
        "model": {"name": spec["model"]},
        "data": {"task": "sft", "train": spec["data"], "eval_fraction": 0.0, "max_length": spec["max_length"]},
        "method": method,
        "train": {"max_steps": spec["steps"], "batch_size": spec["batch_size"], "lr": 2e-4, "max_grad_norm": 1.0,
                  "log_every": spec["warmup"], "seed": 0, "group_by_length": case.get("group_by_length", True),
                  "packing": case.get("packing", False), "chunked_loss": case.get("chunked_loss", True),
                  "compile": case.get("compile", False), "gradient_checkpointing": case.get("gc", False),
                  "precision": case.get("precision") or ("bf16" if spec["gpu"] else "fp32")},
        "eval": {"generate": False},
    }
    for switch in ("fast_dropout", "fused_forward"):  # otherwise llmtune's default
        if switch in case:
            recipe["train"][switch] = case[switch]
    return recipe


def worker_llmtune(spec: dict, case: dict) -> dict:
    from llmtune.console import Reporter
    from llmtune.recipe import recipe_from_dict
    from llmtune.train.session import run_recipe

    out = Path(tempfile.mkdtemp()) / "run"
    run_recipe(recipe_from_dict(llmtune_recipe(spec, case)), Reporter(quiet=True), output=out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if "tokens" in r and r["step"] > spec["warmup"]]
    return {"tokens": sum(r["tokens"] for r in timed), "seconds": sum(r["tokens"] / r["tokens_per_s"] for r in timed),
            "steps": spec["steps"] - spec["warmup"],
            "peak_mb": json.loads((out / "manifest.json").read_text()).get("peak_memory_mb") if spec["gpu"] else None}


class StepClock:
    """Real tokens and wall time between the end of step `warmup` and the last step."""

    def __init__(self, warmup: int):
        self.warmup, self.tokens, self.start, self.end = warmup, 0, None, None
        self.counted = None

    def count(self, inputs: dict) -> None:
        import torch

        mask = inputs.get("attention_mask")
        n = mask.sum() if mask is not None else torch.tensor(inputs["input_ids"].numel())
        self.counted = n if self.counted is None else self.counted + n.to(self.counted.device)

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == clock.warmup:
                    _sync()
                    clock.start, clock.base = time.perf_counter(), int(clock.counted)
                if state.global_step == state.max_steps:
                    _sync()
                    clock.end, clock.tokens = time.perf_counter(), int(clock.counted) - clock.base

        return Clock()


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peer_model(spec: dict, case: dict):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    model.config.use_cache = False
    if case["method"] == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    return model


def worker_hf(spec: dict, case: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    rows = encoded(spec)
    tok = AutoTokenizer.from_pretrained(spec["model"])
    clock = StepClock(spec["warmup"])

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, *a, **kw):
            clock.count(inputs)
            return super().training_step(model, inputs, *a, **kw)

    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=spec["batch_size"],
                             max_steps=spec["steps"], learning_rate=2e-4, logging_steps=10_000, save_strategy="no",
                             report_to="none", use_cpu=not spec["gpu"],
                             bf16=spec["gpu"] or case.get("precision") == "bf16", seed=0,
                             train_sampling_strategy="group_by_length" if case.get("group_by_length") else "random",
                             remove_unused_columns=False,
                             gradient_checkpointing=case.get("gc", False), dataloader_num_workers=0)
    ds = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    trainer = CountingTrainer(model=peer_model(spec, case), args=args, train_dataset=ds,
                              data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
                              callbacks=[clock.callback()])
    trainer.train()
    return {"tokens": clock.tokens, "seconds": clock.end - clock.start, "steps": spec["steps"] - spec["warmup"]}


def worker_trl(spec: dict, case: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = encoded(spec)
    tok = AutoTokenizer.from_pretrained(spec["model"])
    clock = StepClock(spec["warmup"])

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, *a, **kw):
            clock.count(inputs)
            return super().training_step(model, inputs, *a, **kw)

    args = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=spec["batch_size"],
                     max_steps=spec["steps"], learning_rate=2e-4, logging_steps=10_000, save_strategy="no",
                     report_to="none", use_cpu=not spec["gpu"], bf16=spec["gpu"], seed=0,
                     max_length=spec["max_length"], packing=case.get("packing", False),
                     gradient_checkpointing=case.get("gc", False), dataloader_num_workers=0)
    ds = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    trainer = CountingTrainer(model=peer_model(spec, case), args=args, train_dataset=ds, processing_class=tok,
                              callbacks=[clock.callback()])
    trainer.train()
    return {"tokens": clock.tokens, "seconds": clock.end - clock.start, "steps": spec["steps"] - spec["warmup"]}


WORKERS = {"llmtune": worker_llmtune, "hf": worker_hf, "trl": worker_trl}


def worker_main(spec_path: str, case_name: str) -> None:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    case = next(c for c in spec["cases"] if c["name"] == case_name)
    emit(WORKERS[case["tool"]](spec, case))


# -- the sitting --------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["cpu", "cpu-bf16", "gpu", "dry-run"], default="cpu")
    p.add_argument("--shape", choices=[*SHAPES, "smollm2-135m"], default=None)
    p.add_argument("--data", choices=["alpaca", "c4"], default="alpaca")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per case (default 30 CPU, 40 GPU)")
    p.add_argument("--warmup", type=int, default=None, help="steps left out of the timing (default 5 CPU, 10 GPU)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=None, help="default 256 (CPU), 2048 (GPU)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cases", default="", help="comma-separated case names (default: all of the mode)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="write results.json and results.md here")
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "CASE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)
    gpu = args.mode == "gpu"
    dry = args.mode == "dry-run"
    args.shape = args.shape or ("llama-1.1b" if gpu else "tiny" if dry else "small")
    args.steps = args.steps or (4 if dry else 40 if gpu else 30)
    args.warmup = args.warmup or (2 if dry else 10 if gpu else 5)
    args.max_length = args.max_length or (2048 if gpu else 256)
    if dry:
        args.repeats = 1
    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    spec = {**prepare(args, work), "steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size,
            "max_length": args.max_length, "gpu": gpu, "threads": args.threads}
    chosen = cases(args.mode)
    if args.cases:
        wanted = args.cases.split(",")
        unknown = sorted(set(wanted) - {c["name"] for c in chosen})
        if unknown:
            raise SystemExit(f"--cases: no such case in --mode {args.mode}: {', '.join(unknown)}")
        chosen = [c for c in chosen if c["name"] in wanted]
    else:
        chosen = [c for c in chosen if not c.get("ablation")]
    spec["cases"] = chosen
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    runs: dict[str, list] = {c["name"]: [] for c in chosen}
    for repeat in range(args.repeats):
        for c in chosen:  # alternating: every case once per round
            r = run_worker([str(Path(__file__).resolve()), "--worker", str(spec_path), c["name"]])
            runs[c["name"]].append(r)
            brief = f"{r['tokens'] / r['seconds']:,.0f} tok/s" if "error" not in r else "ERROR " + r["error"][-300:]
            print(f"[{repeat + 1}/{args.repeats}] {c['name']}: {brief}", file=sys.stderr, flush=True)
    rows = [(c["name"], summarise(runs[c["name"]])) for c in chosen]
    header = (f"SFT {args.mode}: shape {args.shape}, data {args.data}, batch {args.batch_size}, max_length "
              f"{args.max_length}, {args.steps} steps ({args.warmup} warm-up), median of {args.repeats}; {machine()}")
    names = {c["name"] for c in chosen}
    md = header + "\n\n" + table(rows, [(c["name"], ref) for c in chosen for ref in c.get("vs", []) if ref in names])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"header": header, "cases": dict(rows), "runs": runs},
                                                           indent=2))
        (args.out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
