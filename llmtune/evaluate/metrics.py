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
    accuracy = sum(p == g for p, g in zip(preds, golds)) / n if n else 0.0
    return {
        "accuracy": accuracy,
        "accuracy_se": share_se(accuracy, n),
        "macro_f1": sum(f1s) / k if k else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion,
        "examples": n,
    }


def lm_metrics(total_loss: float, total_tokens: int, per_row: list[tuple[float, int]] | None = None) -> dict:
    """Token-weighted mean loss and perplexity; with each row's (loss sum, tokens), also the
    loss's standard error over rows (the rows, not the tokens, are the independent draws)."""
    loss = total_loss / max(total_tokens, 1)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": total_tokens}
    if per_row:
        out["rows"] = len(per_row)
        out["loss_se"] = ratio_se(per_row, loss)
    return out


def ratio_se(per_row: list[tuple[float, int]], ratio: float) -> float:
    """Standard error of sum(a) / sum(b) over rows (a delta-method estimate)."""
    m = len(per_row)
    if m < 2:
        return float("nan")
    mean_b = sum(b for _, b in per_row) / m
    spread = sum((a - ratio * b) ** 2 for a, b in per_row) / (m - 1)
    return math.sqrt(spread / m) / mean_b if mean_b else float("nan")


def share_se(p: float, n: int) -> float:
    """Standard error of a share `p` of `n` independent rows."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


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
    em = [exact_match(p, r) for p, r in zip(predictions, references)]
    f1 = [token_f1(p, r) for p, r in zip(predictions, references)]
    mean_f1 = sum(f1) / n if n else 0.0
    return {
        "exact_match": sum(em) / n if n else 0.0,
        "exact_match_se": share_se(sum(em) / n, n) if n else float("nan"),
        "f1": mean_f1,
        "f1_se": math.sqrt(sum((x - mean_f1) ** 2 for x in f1) / (n - 1) / n) if n > 1 else float("nan"),
        "generated": n,
    }
