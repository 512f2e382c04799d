"""Plain transformers + peft reference for recipes/smollm2-sst2-classify.yaml (adapted from the
shared reference script ../shared/reference/smol_classify_ref.py): SmolLM2-135M (the folder llmtune
converted from the GGUF), LlamaForSequenceClassification (its `score` layer reads the last real
token's final hidden state), LoRA on every linear layer, AdamW, warm-up then linear decay.

Settings it can vary, to find one that learns (chosen on a held-out slice of the training
phrases, never on the dev sentences):
  --head-lr       learning rate of the new score layer (default: the LoRA rate)
  --init          `random` (transformers' init) or `label-words`: each class's row of the score
                  layer starts as the output embedding of its label word (" negative", " positive"),
                  so the untrained classifier already scores as label-word prompting would
  --template      the text each sentence is put in, `{}` standing for it (default: the sentence alone)
  --steps/--batch/--lr/--rows

  python scripts/smollm2_classify_reference.py --eval heldout [options]   # choose settings
  python scripts/smollm2_classify_reference.py --eval dev [options]       # report the chosen one
Held-out slice: the last 1,000 of the 16,000 bundled training phrases (recipes/data/sst2_train.tsv);
training rows come from the first 15,000. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "recipes" / "data"
LABELS = ["negative", "positive"]


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def label_of(value: str) -> int:
    return int(value) if value in ("0", "1") else LABELS.index(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval", choices=("heldout", "dev"), default="heldout")
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: one epoch over --rows; 0: untrained)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--head-lr", type=float, default=None)
    p.add_argument("--init", choices=("random", "label-words"), default="random")
    p.add_argument("--template", default="{}")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build(args: argparse.Namespace):
    """(model with LoRA, tokenizer); with `--init label-words` the score layer's rows start as the
    embeddings of " negative" and " positive" (SmolLM2 ties its input and output embeddings, so
    these are the rows its LM head scores the label words with)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sys.path.insert(0, str(ROOT))
    from llmtune.models.load import resolve_source

    folder = resolve_source("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.pad_token = tok.pad_token or tok.eos_token
    tok.padding_side = "right"
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    if args.init == "label-words":
        ids = [tok(" " + w, add_special_tokens=False)["input_ids"] for w in LABELS]
        if any(len(i) != 1 for i in ids):
            raise SystemExit(f"a label word is not one token: {ids}")
        with torch.no_grad():
            model.score.weight.copy_(model.get_input_embeddings().weight[[i[0] for i in ids]])
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05,
                                             target_modules="all-linear", task_type="SEQ_CLS"))
    return model, tok


def encoder(tok, args: argparse.Namespace):
    def encode(batch: list[dict]):
        return tok([args.template.format(r["sentence"]) for r in batch], truncation=True,
                   max_length=args.max_length, padding=True, return_tensors="pt")
    return encode


def train(model, encode, rows_: list[dict], args: argparse.Namespace) -> tuple[list[float], float]:
    """AdamW (the head at --head-lr), 6% warm-up then linear decay, clipped at norm 1; returns
    (losses, seconds)."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    head = [p_ for n, p_ in model.named_parameters() if p_.requires_grad and "score" in n]
    body = [p_ for n, p_ in model.named_parameters() if p_.requires_grad and "score" not in n]
    opt = torch.optim.AdamW([{"params": body, "lr": args.lr}, {"params": head, "lr": args.head_lr or args.lr}],
                            weight_decay=0.0)
    steps = args.steps if args.steps is not None else math.ceil(len(rows_) / args.batch)
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    order = torch.randperm(len(rows_), generator=torch.Generator().manual_seed(args.seed)).tolist()
    started, losses = time.time(), []
    model.train()
    for s in range(steps):
        batch = [rows_[order[(s * args.batch + k) % len(rows_)]] for k in range(args.batch)]
        out = model(**encode(batch), labels=torch.tensor([label_of(r["label"]) for r in batch]))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step(), opt.zero_grad()
        losses.append(out.loss.item())
        if s % 10 == 0:
            print(f"step {s}/{steps} loss {out.loss.item():.4f} {time.time() - started:.0f}s", file=sys.stderr)
    return losses, time.time() - started


def accuracy(model, encode, rows_: list[dict]) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(rows_), 64):
            batch = rows_[i:i + 64]
            pred = model(**encode(batch)).logits.argmax(-1)
            correct += sum(int(a) == label_of(r["label"]) for a, r in zip(pred.tolist(), batch))
    return correct / len(rows_)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    bundled = rows(DATA / "sst2_train.tsv")
    training = bundled[:min(args.rows, 15000)]
    evaluation = bundled[15000:] if args.eval == "heldout" else rows(DATA / "sst2_dev.tsv")
    model, tok = build(args)
    encode = encoder(tok, args)
    losses, seconds = train(model, encode, training, args)
    acc = accuracy(model, encode, evaluation)
    print(json.dumps({**vars(args), "accuracy": acc, "accuracy_se": math.sqrt(acc * (1 - acc) / len(evaluation)),
                      "eval_rows": len(evaluation), "first_losses": losses[:5], "last_losses": losses[-5:],
                      "train_seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
