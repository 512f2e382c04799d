"""Choosing the best of several prompt templates without flattering it.

The best of N templates scored on the same rows is biased upwards: the maximum of N noisy
scores. So the eval rows are split in two disjoint parts (each row's side drawn from
`eval.seed` and its position, so it does not change with `--limit`): the template is chosen
on one part and reported on the other. With `eval.template_select_fraction: 0` both happen
on the same rows and the result says that the best score is optimistic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable


@dataclass
class TemplateScores:
    index: int | None
    template: str
    score: Callable[[list[int]], dict]
    """Metrics on the given query positions (the template's predictions are already made)."""
    fit: dict
    """How many prompts were shortened to fit (over all rows)."""


def split_queries(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]] | None:
    """(selection positions, report positions), both non-empty; None when no split is asked
    for or fewer than two rows exist."""
    if fraction <= 0 or n < 2:
        return None
    select = [i for i in range(n) if random.Random(f"template-split:{seed}:{i}").random() < fraction]
    if not select:
        select = [0]
    if len(select) == n:
        select = select[:-1]
    chosen = set(select)
    return select, [i for i in range(n) if i not in chosen]


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}


def assemble(entries: list[TemplateScores], n: int, metric: str, split, has_templates: bool, warn) -> dict:
    """Top level: the chosen template's full scores (on the report rows when split). With
    eval.templates: every template's scalar scores in the order chosen, and the choice."""
    everything = list(range(n))
    if len(entries) < 2:
        split = None
    select, report = split if split else (everything, everything)
    chosen_on = [(e, e.score(select)) for e in entries]
    ranked = sorted(chosen_on, key=lambda x: -x[1][metric])  # stable: ties keep recipe order
    best = ranked[0][0]
    result = {**(best.score(report) if split else ranked[0][1]), **best.fit}
    if not has_templates:
        return result
    rows = []
    for rank, (entry, on_select) in enumerate(ranked, start=1):
        row = {"rank": rank, "index": entry.index, "template": entry.template}
        if split:
            row.update(_scalars(entry.score(report)))
            row["selection"] = _scalars(on_select)
        else:
            row.update(_scalars(on_select))
        rows.append({**row, **entry.fit})
    result["templates"] = rows
    result["best_template"] = _choice(best, ranked[0][1], result, metric, split, n, chose=len(entries) > 1)
    if len(entries) > 1 and not split:
        warn(result["best_template"]["note"])
    return result


def _choice(best: TemplateScores, on_select: dict, result: dict, metric: str, split, n: int, chose: bool) -> dict:
    out = {"index": best.index, "template": best.template, "metric": metric, "value": result[metric]}
    if not chose:
        out.update(rows=n, optimistic=False, note="one template: nothing was chosen")
    elif split:
        out.update(selection_value=on_select[metric], selection_rows=len(split[0]), rows=len(split[1]),
                   optimistic=False,
                   note=f"chosen on {len(split[0])} eval rows, scored on the other {len(split[1])}")
    else:
        out.update(rows=n, optimistic=True,
                   note=f"the best template was chosen and scored on the same {n} rows, so its score is "
                        f"optimistic; set eval.template_select_fraction (e.g. 0.5) to choose on a disjoint part")
    return out
