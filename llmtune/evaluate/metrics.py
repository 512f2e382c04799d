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


_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    import string
    import unicodedata

    text = text.lower()
    # Punctuation is deleted, not spaced ("don't" -> "dont"), as SQuAD's script does.
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over normalised words (bag of words)."""
    from collections import Counter

    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty: a match; one empty: nothing in common
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def generation_metrics(predictions: list[str], references: list[str]) -> dict:
    n = len(references)
    return {
        "exact_match": sum(map(exact_match, predictions, references)) / n if n else 0.0,
        "f1": sum(map(token_f1, predictions, references)) / n if n else 0.0,
        "generated": n,
    }
