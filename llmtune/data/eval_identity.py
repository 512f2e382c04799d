"""What a final evaluation scored, defined once: a hash of the eval rows' content (the task's
fields, not token ids, so a causal LM prompted on the rows and an encoder trained for them
agree), how many rows were scored, the label names in id order, and the primary metric's
name. The run session records it in every manifest; compare ranks runs together only when
all four agree (llmtune/report/eval_identity.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection

PRIMARY_METRICS = {"classification": ("accuracy",), "causal_lm": ("loss",), "sft": ("loss", "f1"),
                   "retrieval": ("ndcg@10",)}
"""Per task, the metric runs are ranked by, first found wins: a prompted sft evaluation
generates answers (token F1) and computes no loss."""
OTHER_TASKS = ("accuracy", "rewards/accuracies", "mean_reward", "loss")
"""The same for preference/RL tasks (a reward model's accuracy, trl's reward accuracy, an RL
run's mean reward), and for records that name no task."""
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})


def primary_metric(task: str | None, metrics: Collection[str] | None = None) -> str:
    """The one policy for which metric a run is ranked by: the first of its task's list that
    `metrics` (a final evaluation) holds; without metrics, or with none of them, the task's
    first (`loss` for other tasks)."""
    candidates = PRIMARY_METRICS.get(task or "", OTHER_TASKS)
    found = next((m for m in candidates if metrics and m in metrics), None)
    return found or (candidates[0] if task in PRIMARY_METRICS else "loss")


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER and not metric.endswith("_loss")


def fingerprint_rows(rows: list[dict]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def eval_identity(recipe, limit: int | None = None, metric: str | None = None) -> dict:
    """The identity of the rows `llmtune eval` (or a run's final evaluation) scores for a
    recipe: its eval split (data.eval, or the rows data.eval_fraction holds out), cut to
    `limit` (default eval.limit); `metric` defaults to the task's primary metric."""
    from llmtune.data.encode import label_names
    from llmtune.data.pipeline import read_splits

    r = recipe
    d = r.data
    if d.task == "retrieval":
        return _retrieval_identity(r, limit, metric)
    train, rows, _, _ = read_splits(d)
    rows = rows or train
    limit = limit or r.eval.limit
    if limit:
        rows = rows[:limit]
    labels = label_names(train, d.columns.label, d.labels) if d.task == "classification" else None
    return {"fingerprint": fingerprint_rows([_content(row.data, d) for row in rows]), "rows": len(rows),
            "labels": labels, "metric": metric or primary_metric(d.task)}


def _content(data: dict, d) -> dict:
    if d.task != "classification":
        return data
    c = d.columns
    out = {"text": data.get(c.text), "label": data.get(c.label)}
    if c.text_pair:
        out["text_pair"] = data.get(c.text_pair)
    return {k: (v if v is None or isinstance(v, str) else str(v)) for k, v in out.items()}


def _retrieval_identity(recipe, limit: int | None, metric: str | None) -> dict:
    """A retrieval evaluation scores the eval queries against the documents with the judgments,
    the documents cut into windows of a given size: all of it is in the fingerprint."""
    from llmtune.data.retrieval import read_collection

    d = recipe.data
    collection = read_collection(d, limit or recipe.eval.limit)
    windows = f"{d.retrieval.chunk_tokens}/{d.retrieval.overlap}"
    digest = hashlib.sha256(f"{collection.fingerprint()}:{windows}".encode()).hexdigest()[:16]
    return {"fingerprint": digest, "rows": len(collection.queries), "labels": None,
            "metric": metric or primary_metric("retrieval")}
