"""Metrics computed from predictions; plain Python so they are easy to check by hand."""

from __future__ import annotations

import math


def classification_metrics(preds: list[int], golds: list[int], labels: list[str]) -> dict:
    n = len(golds)
    k = len(labels)
    confusion = [[0] * k for _ in range(k)]
    for p, g in zip(preds, golds):
        confusion[g][p] += 1
    per_class = {}
    f1s = []
    for i, name in enumerate(labels):
        tp = confusion[i][i]
        predicted = sum(confusion[j][i] for j in range(k))
        actual = sum(confusion[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
        f1s.append(f1)
    return {
        "accuracy": sum(p == g for p, g in zip(preds, golds)) / n if n else 0.0,
        "macro_f1": sum(f1s) / k if k else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion,
        "examples": n,
    }


def lm_metrics(total_loss: float, total_tokens: int) -> dict:
    loss = total_loss / max(total_tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": total_tokens}
