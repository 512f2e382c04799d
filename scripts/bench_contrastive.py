"""The retrieval proof (docs/retrieval.md). Not a test.

On Cranfield (1,400 abstracts, 225 judged queries), the queries are split in two halves by a
seeded shuffle: the training half's judgments become (query, relevant abstract) pairs, the
test half is only ever scored (no test query's text reaches training). Then, each step a
separate process, all scored on the test half with llmtune's exact document-level evaluation:

  base      `llmtune eval` of the MiniLM recipe (before training)
  llmtune   `llmtune train` (method contrastive, full finetuning), then `llmtune eval RUN`
  lora      the same with method.lora (r 16 on query/key/value/dense)
  st        sentence-transformers' own trainer (SentenceTransformerTrainer,
            MultipleNegativesRankingLoss, NO_DUPLICATES batches) on the same pairs with the same
            batch size, learning rate, warmup, epochs and seed; its saved model scored by the same
            `llmtune eval` recipe (model.name: the saved folder)
  titles    the training half's pairs plus in-domain pseudo-queries from the collection itself
            (each abstract's title as the query for the rest of its abstract; `title_pairs`),
            with the setting that won on the inner dev quarter (`tune-titles-*` against
            `tune-lr2e-05`); `titles-seed1` the same with training seed 1, `titles-only` the
            pseudo-queries alone (these two choose nothing)
  bm25 / hybrid (base MiniLM) / hybrid (trained encoder) / dense through the store:
            `llmtune index` of the documents, then `llmtune eval` with eval.store and eval.search

Training rows report the trainer's own seconds (the loop only) and the peak resident memory
of the whole training process (loading, training, saving; no evaluation in it: the training
recipes carry no data.eval). nDCG@10 comes with a 95% bootstrap interval over the test
queries, and each row's paired interval of its difference to `base`.

  /work/locks/exclusive .venv/bin/python scripts/bench_contrastive.py --out /tmp/cran-proof
  (steps already done are skipped: a step's results file is its marker; --only NAME[,NAME] reruns some)
  The titles rows (docs/retrieval.md) came from two holds:
    --only tune-titles-lr2e-05,tune-titles-lr5e-05   (choose, inside the training half)
    --only titles,titles-seed1,titles-only            (score the choice on the test half)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

HYPER = {"epochs": 3, "batch_size": 32, "lr": 2.0e-5, "lora_lr": 5.0e-4, "warmup_ratio": 0.1, "seed": 0}
"""Shared by llmtune and sentence-transformers. `--lr` (chosen by the `tune-*` steps on the
training half alone) replaces lr; LoRA takes lora_lr."""
LORA = {"r": 16, "alpha": 32, "dropout": 0.1, "target_modules": ["query", "key", "value", "dense"]}
TUNE_LRS = (2.0e-5, 1.0e-4)
HARD_SKIP = 3
"""Mined negatives skip the 3 highest-ranked non-positives (often relevant but unjudged)."""
TITLE_CANDIDATES = {"titles-lr2e-05": {"lr": 2.0e-5}, "titles-lr5e-05": {"lr": 5.0e-5}}
"""The real pairs mixed with the title pseudo-queries (`title_pairs`): one pass (epochs 1), texts
cut at 128 tokens (the evaluation's windows are 128 tokens; half the cost of a step at 256),
at two learning rates. Each is first trained on the inner training quarter and scored on the
inner dev quarter (`tune-titles-*`, beside `tune-lr2e-05`, the setting of the `llmtune` row);
the `titles` step trains the best of the three on the whole training half."""
TITLE_SETTINGS = {"epochs": 1, "max_length": 128}


def prepare(out: Path, cranfield: Path, seed: int = 0) -> dict:
    """Cranfield as a retrieval recipe's files; the two query halves and the training pairs."""
    from bench_index import load_cranfield

    docs, queries, qrels = load_cranfield(cranfield)
    judged = sorted((q for q in queries if any(g > 0 for g in qrels.get(q, {}).values())), key=int)
    order = judged[:]
    random.Random(seed).shuffle(order)
    train_q, test_q = sorted(order[: len(order) // 2], key=int), sorted(order[len(order) // 2:], key=int)
    assert not {queries[q] for q in train_q} & {queries[q] for q in test_q}, "a query text in both halves"
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    _jsonl(data / "documents.jsonl", [{"id": d, "text": t} for d, t in docs.items()])
    _jsonl(data / "queries_train.jsonl", [{"id": q, "text": queries[q]} for q in train_q])
    _jsonl(data / "queries_test.jsonl", [{"id": q, "text": queries[q]} for q in test_q])
    with open(data / "qrels.tsv", "w") as fh:
        fh.write("query_id\tdoc_id\trelevance\n")
        for q in judged:
            for d, g in sorted(qrels[q].items(), key=lambda x: int(x[0])):
                fh.write(f"{q}\t{d}\t{g}\n")
    def pairs_of(qids):
        return [{"query": queries[q], "positive": docs[d]} for q in qids for d, g in sorted(qrels[q].items())
                if g > 0 and docs[d]]

    pairs = pairs_of(train_q)
    _jsonl(data / "pairs_train.jsonl", pairs)
    titles = title_pairs(cranfield)
    _jsonl(data / "pairs_titles.jsonl", titles)
    _jsonl(data / "pairs_train+titles.jsonl", pairs + titles)
    # The learning rate is chosen inside the training half: half of its queries train, the other half score.
    inner = train_q[:]
    random.Random(seed + 1).shuffle(inner)
    tune_train, tune_dev = sorted(inner[: len(inner) // 2], key=int), sorted(inner[len(inner) // 2:], key=int)
    _jsonl(data / "pairs_tune.jsonl", pairs_of(tune_train))
    _jsonl(data / "pairs_tune+titles.jsonl", pairs_of(tune_train) + titles)
    _jsonl(data / "queries_dev.jsonl", [{"id": q, "text": queries[q]} for q in tune_dev])
    return {"train_queries": len(train_q), "test_queries": len(test_q), "pairs": len(pairs), "documents": len(docs),
            "tune_train_queries": len(tune_train), "tune_dev_queries": len(tune_dev), "title_pairs": len(titles)}


def title_pairs(cranfield: Path, min_words: int = 5) -> list[dict]:
    """In-domain pseudo-queries from the collection itself, no query text involved: each
    abstract's title (.T) as the query for the rest of its abstract (.W starts with the title;
    the copy is cut off, else the pair would be a substring match that teaches nothing).
    Titles shared by several abstracts (Cranfield holds a few repeated records) and abstracts
    that do not start with their title are left out."""
    from collections import Counter

    from bench_index import read_smart

    records = [(" ".join((r.get("T") or "").split()), " ".join((r.get("W") or "").split()))
               for r in read_smart(cranfield / "cran.all.1400")]
    shared = Counter(title for title, _ in records)
    pairs = []
    for title, text in records:
        body = text[len(title):].strip(" .") if title and text.startswith(title) else ""
        if shared[title] == 1 and len(body.split()) >= min_words:
            pairs.append({"query": title.rstrip(" ."), "positive": body})
    return pairs


def bundle(cranfield: Path, out: Path, queries: int = 30, documents: int = 400, seed: int = 0) -> dict:
    """recipes/data/cranfield/: the first `queries` of each half of the proof's split, their
    judgments, and `documents` abstracts: every one judged relevant to those queries, the
    rest drawn at random (seeded) from the others."""
    from bench_index import load_cranfield

    docs, all_queries, qrels = load_cranfield(cranfield)
    full = out / "full-split"
    prepare(full, cranfield, seed)
    halves = {name: [json.loads(x) for x in (full / "data" / f"queries_{name}.jsonl").read_text().splitlines()]
              [:queries] for name in ("train", "test")}
    chosen = [q["id"] for rows in halves.values() for q in rows]
    keep = sorted({d for q in chosen for d, g in qrels[q].items() if g > 0}, key=int)
    rest = sorted((d for d in docs if d not in keep and docs[d]), key=int)
    keep = sorted(keep + random.Random(seed).sample(rest, max(0, documents - len(keep))), key=int)
    out.mkdir(parents=True, exist_ok=True)
    _jsonl(out / "documents.jsonl", [{"id": d, "text": docs[d]} for d in keep])
    for name, rows in halves.items():
        _jsonl(out / f"queries_{name}.jsonl", rows)
    with open(out / "qrels.tsv", "w") as fh:
        fh.write("query_id\tdoc_id\trelevance\n")
        for q in chosen:
            for d, g in sorted(qrels[q].items(), key=lambda x: int(x[0])):
                if d in keep:
                    fh.write(f"{q}\t{d}\t{g}\n")
    train = [q["id"] for q in halves["train"]]
    _jsonl(out / "pairs_train.jsonl", [{"query": all_queries[q], "positive": docs[d]} for q in train
                                       for d, g in sorted(qrels[q].items()) if g > 0 and d in keep])
    import shutil

    shutil.rmtree(full)
    return {"documents": len(keep), "queries": {k: len(v) for k, v in halves.items()}}


def _jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def recipe(out: Path, name: str, *, model: str = "minilm", lora: bool = False, evaluate: bool = True,
           store: str | None = None, search: str = "dense", pairs: str = "pairs_train", queries: str = "queries_test",
           lr: float | None = None, hard_negatives: int = 0, epochs: int | None = None, max_length: int = 256,
           seed: int | None = None) -> Path:
    import yaml

    data = out / "data"
    h = HYPER
    r = {"model": {"name": model},
         "data": {"task": "retrieval", "train": str(data / f"{pairs}.jsonl"), "max_length": max_length},
         "method": {"name": "contrastive", **({"lora": LORA} if lora else {}),
                    **({"hard_negatives": hard_negatives, "hard_negatives_skip": HARD_SKIP} if hard_negatives else {})},
         "train": {"epochs": epochs or h["epochs"], "batch_size": h["batch_size"],
                   "lr": lr or (h["lora_lr"] if lora else h["lr"]), "warmup_ratio": h["warmup_ratio"],
                   "seed": h["seed"] if seed is None else seed, "log_every": 5},
         "eval": {"batch_size": 64, "search": search, **({"store": store} if store else {})}}
    if evaluate or hard_negatives:  # mining reads the collection (the test queries are not used for it)
        r["data"]["eval"] = str(data / f"{queries}.jsonl")
        r["data"]["retrieval"] = {"documents": str(data / "documents.jsonl"), "qrels": str(data / "qrels.tsv")}
    path = out / "recipes" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def run(cmd: list[str], log: Path) -> dict:
    """Run a child process; its wall seconds and peak resident memory (MiB)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return {"wall_seconds": time.perf_counter() - t0, "peak_rss_mb": usage.ru_maxrss / 1024}


def llmtune(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmtune", *args]


def st_train(pairs: Path, model_out: Path, result: Path) -> None:
    """sentence-transformers' own trainer on the same pairs and settings (runs in its own process)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers

    from llmtune.models.builtin import minilm_path

    h = HYPER
    torch.manual_seed(h["seed"])
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.max_seq_length = 256
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    dataset = Dataset.from_dict({"anchor": [r["query"] for r in rows], "positive": [r["positive"] for r in rows]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(model_out.parent / "st-work"), num_train_epochs=h["epochs"],
        per_device_train_batch_size=h["batch_size"], learning_rate=h["lr"], warmup_ratio=h["warmup_ratio"],
        seed=h["seed"], batch_sampler=BatchSamplers.NO_DUPLICATES, lr_scheduler_type="linear", weight_decay=0.0,
        max_grad_norm=1.0, logging_steps=5, save_strategy="no", report_to="none", dataloader_num_workers=0)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=MultipleNegativesRankingLoss(model, scale=20.0))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model.save(str(model_out))
    result.write_text(json.dumps({"train_seconds": seconds, "steps": trainer.state.global_step}) + "\n")


def eval_json(target: Path, log: Path, *extra: str) -> dict:
    out = log.with_suffix(".json")
    cmd = llmtune("eval", str(target), "--json", *extra)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    with open(out, "w") as fh, open(log, "w") as err:
        if subprocess.run(cmd, stdout=fh, stderr=err, env=env).returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed; see {log}")
    return json.loads(out.read_text())


def eval_sets(out: Path) -> list[str]:
    data = out / "data"
    return ["--set", f"data.eval={data / 'queries_test.jsonl'}", "--set",
            f"data.retrieval.documents={data / 'documents.jsonl'}", "--set", f"data.retrieval.qrels={data / 'qrels.tsv'}"]


def step_train(out: Path, name: str, lora: bool, hard_negatives: int = 0, **options) -> dict:
    """llmtune's loop: train (no eval in the process), then score the run."""
    logs, run_dir = out / "logs", out / "runs" / name
    cost = run(llmtune("train", str(recipe(out, f"{name}-train", lora=lora, evaluate=False,
                                           hard_negatives=hard_negatives, **options)),
                       "--output", str(run_dir), "--overwrite"),
               logs / f"{name}-train.log")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    scores = eval_json(run_dir, logs / f"{name}-eval.log", *eval_sets(out))
    return {**cost, "train_seconds": manifest["train_seconds"], "steps": manifest["steps"],
            "trainable_parameters": manifest["trainable_parameters"], "eval": scores}


def step_st(out: Path) -> dict:
    logs, model_out = out / "logs", out / "runs" / "st" / "model"
    model_out.parent.mkdir(parents=True, exist_ok=True)
    marker = out / "runs" / "st" / "train.json"
    cost = run([sys.executable, __file__, "st-train", "--pairs", str(out / "data" / "pairs_train.jsonl"),
                "--model-out", str(model_out), "--result", str(marker)], logs / "st-train.log")
    trained = json.loads(marker.read_text())
    scores = eval_json(recipe(out, "st", model=str(model_out)), logs / "st-eval.log")
    return {**cost, **trained, "eval": scores}


def step_base(out: Path) -> dict:
    return {"eval": eval_json(recipe(out, "base"), out / "logs" / "base-eval.log")}


def step_tune(out: Path, lr: float, name: str | None = None, **options) -> dict:
    """Train on the inner training quarter, score on the inner dev quarter (no test query)."""
    name = name or f"tune-lr{lr:g}"
    run_dir = out / "runs" / name
    options = {"pairs": "pairs_tune", **options}
    cost = run(llmtune("train", str(recipe(out, name, queries="queries_dev", lr=lr, **options)),
                       "--output", str(run_dir), "--overwrite"), out / "logs" / f"{name}.log")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {**cost, "lr": lr, "setting": name, "train_seconds": manifest["train_seconds"], "steps": manifest["steps"],
            "eval": manifest["final_eval"]}


def step_store(out: Path, encoder: str, search: str) -> dict:
    """`llmtune eval` through a store of the documents built with `encoder` (built once)."""
    store = out / "stores" / f"{encoder}.db"
    logs = out / "logs"
    if not store.exists():
        store.parent.mkdir(exist_ok=True)
        model = "minilm" if encoder == "base" else str(out / "runs" / encoder)
        run(llmtune("index", str(out / "data" / "documents.jsonl"), "--id-column", "id", "--store", str(store),
                    "--encoder", model), logs / f"index-{encoder}.log")
    if encoder == "base":
        target = recipe(out, f"{search}-base", store=str(store), search=search)
        return {"eval": eval_json(target, logs / f"{search}-{encoder}.log")}
    return {"eval": eval_json(out / "runs" / encoder, logs / f"{search}-{encoder}.log", *eval_sets(out),
                              "--set", f"eval.store={store}", "--set", f"eval.search={search}")}


def step_titles(out: Path, name: str = "titles", pairs: str = "pairs_train+titles", seed: int | None = None) -> dict:
    """The real pairs plus title pseudo-queries, with the setting that scored best on the inner
    dev quarter among TITLE_CANDIDATES and `tune-lr2e-05` (the `llmtune` row's setting), trained
    on the whole training half and scored on the test half. Exits without training when the old
    setting wins: then the `llmtune` row already is the chosen recipe. `titles-seed1` reruns
    the chosen recipe with another training seed and `titles-only` trains on the pseudo-queries
    alone (no judged query at all): read on the test half, they choose nothing."""
    scores = {}
    for tuned in ("tune-lr2e-05", *(f"tune-{c}" for c in TITLE_CANDIDATES)):
        marker = out / "results" / f"{tuned}.json"
        if not marker.exists():
            sys.exit(f"step {name} needs step {tuned} first (--only {tuned})")
        scores[tuned] = json.loads(marker.read_text())["eval"]["ndcg@10"]
    best = max(scores, key=scores.__getitem__)
    print(f"{name}: dev nDCG@10 {json.dumps(scores)}; chosen {best}", flush=True)
    if best == "tune-lr2e-05":
        sys.exit(f"{name}: the real pairs alone scored best on the dev quarter; nothing new to train")
    setting = {**TITLE_SETTINGS, **TITLE_CANDIDATES[best.removeprefix("tune-")], "seed": seed}
    return {**step_train(out, name, False, pairs=pairs, **setting), "chosen": best, "dev_ndcg@10": scores,
            "setting": setting}


def step_tune_base(out: Path) -> dict:
    """The shipped MiniLM on the inner dev quarter: what the tuning runs start from."""
    target = recipe(out, "tune-base", pairs="pairs_tune", queries="queries_dev")
    return {"lr": 0.0, "eval": eval_json(target, out / "logs" / "tune-base.log")}


STEPS = {"tune-base": step_tune_base,
         **{f"tune-lr{lr:g}": (lambda lr: lambda out: step_tune(out, lr))(lr) for lr in TUNE_LRS},
         "tune-hardneg": lambda out: step_tune(out, HYPER["lr"], "tune-hardneg", hard_negatives=1),
         "tune-epochs10": lambda out: step_tune(out, HYPER["lr"], "tune-epochs10", epochs=10),
         **{f"tune-{name}": (lambda name, c: lambda out: step_tune(
             out, c["lr"], f"tune-{name}", pairs="pairs_tune+titles", **TITLE_SETTINGS))(name, c)
            for name, c in TITLE_CANDIDATES.items()},
         "base": step_base, "llmtune": lambda out: step_train(out, "llmtune", False),
         "lora": lambda out: step_train(out, "lora", True), "st": step_st,
         "hardneg": lambda out: step_train(out, "hardneg", False, hard_negatives=1),
         "titles": step_titles, "titles-seed1": lambda out: step_titles(out, "titles-seed1", seed=1),
         "titles-only": lambda out: step_titles(out, "titles-only", pairs="pairs_titles"),
         **{f"{search}-base": (lambda m: lambda out: step_store(out, "base", m))(search)
            for search in ("bm25", "hybrid", "dense")},
         **{f"{search}-llmtune": (lambda m: lambda out: step_store(out, "llmtune", m))(search)
            for search in ("hybrid", "dense")}}
LABELS = {"base": "dense, MiniLM as shipped (before)", "llmtune": "dense, contrastive full (llmtune loop)",
          "lora": "dense, contrastive LoRA r16 (llmtune loop)", "st": "dense, sentence-transformers trainer",
          "hardneg": "dense, contrastive full + 1 mined hard negative (skip 3)",
          "titles": "dense, contrastive full, real pairs + title pseudo-queries",
          "titles-seed1": "the same, training seed 1",
          "titles-only": "dense, contrastive full, title pseudo-queries only",
          "bm25-base": "bm25 (store)", "hybrid-base": "hybrid, MiniLM as shipped (store)",
          "dense-base": "dense, MiniLM as shipped (store, HNSW)",
          "hybrid-llmtune": "hybrid, contrastive full (store)", "dense-llmtune": "dense, contrastive full (store, HNSW)"}


def table(out: Path, names: list[str]) -> str:
    from llmtune.evaluate.ir_metrics import bootstrap_interval

    results = {n: json.loads((out / "results" / f"{n}.json").read_text()) for n in names
               if (out / "results" / f"{n}.json").exists() and not n.startswith("tune-")}
    tuned = [json.loads((out / "results" / f"{n}.json").read_text()) for n in names
             if n.startswith("tune-") and (out / "results" / f"{n}.json").exists()]
    base = results.get("base", {}).get("eval", {}).get("per_query")
    lines = ["| run | nDCG@10 (95% CI) | Δ vs before (95% CI) | MAP@10 | recall@10 | recall@100 | MRR | train s | "
             "peak MiB |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, res in results.items():
        ev, per = res["eval"], res["eval"]["per_query"]
        lo, hi = bootstrap_interval([s["ndcg@10"] for s in per.values()])
        delta = ""
        if base and name != "base":
            diffs = [per[q]["ndcg@10"] - base[q]["ndcg@10"] for q in base]
            dlo, dhi = bootstrap_interval(diffs)
            delta = f"{sum(diffs) / len(diffs):+.4f} ({dlo:+.4f}, {dhi:+.4f})"
        cost = (f"{res['train_seconds']:.0f}", f"{res['peak_rss_mb']:,.0f}") if "train_seconds" in res else ("", "")
        lines.append(f"| {LABELS.get(name, name)} | {ev['ndcg@10']:.4f} ({lo:.4f}, {hi:.4f}) | {delta} | "
                     f"{ev['map@10']:.4f} | {ev['recall@10']:.4f} | {ev['recall@100']:.4f} | {ev['mrr']:.4f} | "
                     f"{cost[0]} | {cost[1]} |")
    if tuned:
        lines += ["", "| setting (inner split of the training half) | lr | dev nDCG@10 |", "| --- | --- | --- |"]
        lines += [f"| {t.get('setting', 'untrained' if not t['lr'] else 'epochs 3')} | {t['lr']:g} | "
                  f"{t['eval']['ndcg@10']:.4f} |" for t in tuned]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    st = sub.add_parser("st-train")
    st.add_argument("--pairs", type=Path, required=True)
    st.add_argument("--model-out", type=Path, required=True)
    st.add_argument("--result", type=Path, required=True)
    bundled = sub.add_parser("bundle", help="write recipes/data/cranfield/ (the shipped subset)")
    bundled.add_argument("--cranfield", type=Path, required=True)
    bundled.add_argument("--to", type=Path, default=ROOT / "recipes" / "data" / "cranfield")
    parser.add_argument("--out", type=Path, default=Path("/tmp/cranfield-proof"))
    parser.add_argument("--cranfield", type=Path, default=None, help="the Cranfield folder (default: shared/data/"
                        "cranfield beside the checkout)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate of the full-finetuning rows "
                        "(llmtune and st): the best of the tune-* steps")
    parser.add_argument("--only", default=None, help="comma-separated steps to (re)run: " + ", ".join(STEPS))
    args = parser.parse_args()
    if args.command == "st-train":
        return st_train(args.pairs, args.model_out, args.result)
    if args.command == "bundle":
        return print(json.dumps(bundle(args.cranfield, args.to)))
    if args.lr:
        HYPER["lr"] = args.lr
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(exist_ok=True)
    from bench_index import SHARED

    split = prepare(out, args.cranfield or SHARED / "cranfield")
    from bench_index import machine

    print(json.dumps({"split": split, "machine": machine(), "hyper": HYPER}, indent=1), flush=True)
    only = args.only.split(",") if args.only else None
    for name, step in STEPS.items():
        marker = out / "results" / f"{name}.json"
        if (only is None and marker.exists()) or (only is not None and name not in only):
            continue
        t0 = time.perf_counter()
        result = step(out)
        marker.write_text(json.dumps(result) + "\n")
        print(f"{name}: nDCG@10 {result['eval']['ndcg@10']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(table(out, list(STEPS)))


if __name__ == "__main__":
    main()
