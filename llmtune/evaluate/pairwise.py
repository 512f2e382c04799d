"""Held-out preference figures computed per pair, beside the shortcuts that could pass for them.

A preference evaluation scores each pair's chosen and rejected response (a reward model's
score, or a policy's implicit reward). The accuracy is the share of pairs whose chosen
response scores higher, counted over pairs, never averaged over batches: a mean of batch
means weighs the rows of an uneven last batch more than the others. Ties count half (a
policy that is still its own reference ties every pair, which is chance, not failure).

Next to it stand what a model would score without learning the preference:
- `chance`: 0.5;
- `majority`: prefer the response text that is chosen more often than rejected across these
  pairs (only where responses repeat, e.g. label words); scored with the pairs' own labels,
  so it is the best any class-prior shortcut can do here, not a fair prior;
- `shorter` / `longer`: always prefer the response with fewer / more tokens.
A figure means learning only where it clears these by more than its standard error.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class ScoredPair:
    """One held-out pair as scored: the two responses' scores, texts and token counts."""

    chosen: float
    rejected: float
    chosen_text: str = ""
    rejected_text: str = ""
    chosen_tokens: int = 0
    rejected_tokens: int = 0


def proportion_se(p: float, n: int) -> float:
    """Standard error of a share `p` measured on `n` independent rows."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n else float("nan")


def mean_se(values: list[float]) -> tuple[float, float]:
    """(mean, standard error of the mean)."""
    n = len(values)
    if not n:
        return float("nan"), float("nan")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, float("nan")
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _win(a: float, b: float) -> float:
    """1 when a > b, 0.5 on a tie, else 0."""
    return 1.0 if a > b else 0.5 if a == b else 0.0


def majority_baseline(pairs: list[ScoredPair]) -> float | None:
    """Share won by always preferring the response more often chosen than rejected in these
    pairs; None where no response text occurs in two pairs (there is no prior to exploit)."""
    seen = Counter()
    for p in pairs:
        seen[p.chosen_text] += 1
        seen[p.rejected_text] += 1
    if not pairs or max(seen.values()) < 2:
        return None
    net = Counter()
    for p in pairs:
        net[p.chosen_text] += 1
        net[p.rejected_text] -= 1
    return math.fsum(_win(net[p.chosen_text], net[p.rejected_text]) for p in pairs) / len(pairs)


def baselines(pairs: list[ScoredPair]) -> dict[str, float | None]:
    n = len(pairs)
    shorter = math.fsum(_win(p.rejected_tokens, p.chosen_tokens) for p in pairs) / n if n else float("nan")
    return {"chance": 0.5, "majority": majority_baseline(pairs), "shorter": shorter,
            "longer": 1.0 - shorter if n else float("nan")}


def pairwise_report(pairs: list[ScoredPair]) -> dict:
    """accuracy (ties half) with its standard error, the mean margin with its standard error,
    the count of pairs and ties, and the shortcut baselines."""
    n = len(pairs)
    wins = [_win(p.chosen, p.rejected) for p in pairs]
    accuracy = math.fsum(wins) / n if n else float("nan")
    margin, margin_se = mean_se([p.chosen - p.rejected for p in pairs])
    return {"pairs": n, "accuracy": accuracy, "accuracy_se": proportion_se(accuracy, n),
            "ties": sum(p.chosen == p.rejected for p in pairs), "margin": margin, "margin_se": margin_se,
            "chosen": mean_se([p.chosen for p in pairs])[0], "rejected": mean_se([p.rejected for p in pairs])[0],
            "baselines": baselines(pairs)}
