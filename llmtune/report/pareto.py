"""Pareto fronts: which rows no other row beats on the metric and a cost at once."""

from __future__ import annotations

from typing import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """`a` = (score, cost), higher score and lower cost better: at least as good on both,
    strictly better on one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def front(points: Sequence[tuple[float, float] | None]) -> list[bool]:
    """For each (score, cost) point, whether it is on the front; None (unknown) never is."""
    known = [p for p in points if p is not None]
    return [p is not None and not any(dominates(q, p) for q in known) for p in points]


def oriented(metric: float | None, higher_better: bool) -> float | None:
    """The metric as a score where higher is better."""
    if metric is None:
        return None
    return metric if higher_better else -metric
