"""The comparison table: one row per recipe variant (its seeds aggregated as mean ± std),
one row per failed, diverged or unfinished run, the hyperparameters that differ, the
difference to a baseline row and the Pareto flags."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from llmtune.errors import UserError
from llmtune.report import pareto
from llmtune.data.eval_identity import higher_is_better
from llmtune.report.recipe_diff import differing_keys, group_key, hyperparameters, method_options

NOT_METRICS = frozenset({"examples", "tokens", "prompts", "prompts_shortened", "demos_dropped", "queries_cut",
                         "mean_demos", "prompt_seconds", "generated", "queries", "unjudged_queries", "documents",
                         "chunks", "embed_seconds", "search_seconds"})
"""Counts and timings that sit beside the scores in final_eval."""
PARETO_COSTS = {"params": "trainable_parameters", "time": "train_seconds", "memory": "peak_memory_mb"}
STATS = ("train_seconds", "wall_seconds", "eval_seconds", "tokens_per_second", "peak_memory_mb", "artifact_bytes",
         "train_tokens")


def stat(values: list) -> dict:
    """mean ± sample std over the seeds that recorded a value; std is None for fewer than two."""
    known = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {"mean": statistics.fmean(known) if known else None,
            "std": statistics.stdev(known) if len(known) > 1 else None, "n": len(known), "values": known}


def build_table(records, *, metric: str, names: dict | None = None, baseline: str | None = None,
                eval_sets: dict | None = None, assigned: dict | None = None, forced: bool = False) -> dict:
    """`records`: RunRecords in the order they were given; `names`: path -> row name (compare
    --recipes names rows after recipes), else derived from run directory names."""
    assigned = assigned or {}
    names = names or {}
    groups: dict[str, list] = {}
    failures = []
    for index, rec in enumerate(records):
        if rec.complete:
            # Seeds of one variant: the same recipe (seed aside) under the same folder name (-seedN aside).
            key = names.get(rec.path) or (f"{_stem(rec.path)}|{group_key(rec.recipe, rec.method)}"
                                          if rec.recipe else str(rec.path))
            groups.setdefault(f"{assigned.get(rec.path)}|{key}", []).append((index, rec))
        else:
            failures.append([(index, rec)])
    clusters = list(groups.values()) + failures
    rows = [_row(cluster, name, metric, assigned) for cluster, name in zip(clusters, _cluster_names(clusters, names))]
    rows.sort(key=lambda row: row.pop("_order"))
    keys = differing_keys([row["hyperparameters"] for row in rows])
    for row in rows:
        row["hyperparameters"] = {k: row["hyperparameters"].get(k) for k in keys}
    ranked = [row for row in rows if row["ranked"]]
    _mark_pareto(ranked, higher_is_better(metric))
    base = _baseline(ranked, rows, baseline)
    for row in ranked:
        row["delta"] = _delta(row, base) if base and row is not base else None
    return {"metric": metric, "higher_is_better": higher_is_better(metric), "baseline": base["name"] if base else None,
            "forced": forced, "eval_sets": eval_sets or {}, "hyperparameters": keys, "rows": rows}


def _stem(path) -> str:
    return re.sub(r"-seed\d+$", "", Path(path).name)


def _cluster_names(clusters: list, names: dict) -> list[str]:
    """Each cluster's row name: the given one, or its first run's folder name without a
    trailing -seedN. Ranked rows whose names clash take their parent folder, then a number;
    a failed run keeps its variant's name (its seed tells it apart)."""
    chosen = [names.get(c[0][1].path) or _stem(c[0][1].path) for c in clusters]
    ranked = [i for i, c in enumerate(clusters) if c[0][1].complete and not names.get(c[0][1].path)]
    for i in ranked:
        if sum(chosen[j] == chosen[i] for j in ranked) > 1:
            chosen[i] = f"{Path(clusters[i][0][1].path).parent.name}/{chosen[i]}"
    for n, i in enumerate(ranked):
        clashes = [j for j in ranked[:n] if chosen[j] == chosen[i]]
        if clashes:
            chosen[i] = f"{chosen[i]} #{len(clashes) + 1}"
    return chosen


def _row(cluster: list, name: str, metric: str, assigned: dict) -> dict:
    records = [rec for _, rec in cluster]
    first = records[0]
    in_context = first.method == "in-context"
    statuses = sorted({rec.status for rec in records})
    row = {
        "_order": cluster[0][0],
        "name": name,
        "method": first.method,
        "status": statuses[0] if len(statuses) == 1 else "/".join(statuses),
        "ranked": first.complete,
        "error": first.error if not first.complete else None,
        "runs": [str(rec.path) for rec in records],
        "seeds": [rec.get("seed") for rec in records],
        "n": len(records),
        "eval_set": assigned.get(first.path),
        "options": method_options(first.recipe, in_context),
        "hyperparameters": hyperparameters(first.recipe, in_context),
        "trainable_parameters": _same(records, "trainable_parameters"),
        "total_parameters": _same(records, "total_parameters"),
        "trainable_percent": _same(records, "trainable_percent"),
    }
    for key in STATS:
        row[key] = stat([rec.get(key) for rec in records])
    row["seconds_per_query"] = stat([_per_query(rec) for rec in records])
    row["metric"] = stat([rec.final_eval.get(metric) for rec in records])
    row["secondary"] = {k: stat([rec.final_eval.get(k) for rec in records]) for k in _secondary(records, metric)}
    row["pareto"] = []
    row["delta"] = None
    return row


def _same(records, key: str):
    """A value every seed shares (parameter counts); the mean if seeds disagree, None if unknown."""
    values = [rec.get(key) for rec in records if isinstance(rec.get(key), (int, float))]
    if not values:
        return None
    return values[0] if len(set(values)) == 1 else statistics.fmean(values)


def _per_query(rec) -> float | None:
    seconds, identity = rec.get("eval_seconds"), rec.get("eval_identity") or {}
    rows = identity.get("rows") if isinstance(identity, dict) else None
    if isinstance(seconds, (int, float)) and isinstance(rows, int) and rows > 0:
        return seconds / rows
    return None


def _secondary(records, metric: str) -> list[str]:
    keys: list[str] = []
    for rec in records:
        keys += [k for k, v in rec.final_eval.items()
                 if k != metric and k not in NOT_METRICS and isinstance(v, float) and k not in keys]
    return keys


def _mark_pareto(rows: list[dict], higher_better: bool) -> None:
    for flag, cost in PARETO_COSTS.items():
        points = []
        for row in rows:
            score = pareto.oriented(row["metric"]["mean"], higher_better)
            value = row[cost]["mean"] if isinstance(row[cost], dict) else row[cost]
            points.append(None if score is None or value is None else (score, float(value)))
        for row, on in zip(rows, pareto.front(points)):
            if on:
                row["pareto"].append(flag)


def _baseline(ranked: list[dict], rows: list[dict], wanted: str | None) -> dict | None:
    """The row named `wanted` (or the only row of that method); default: the first ranked row."""
    if wanted is None:
        return ranked[0] if ranked else None
    hits = [row for row in ranked if row["name"] == wanted] or [row for row in ranked if row["method"] == wanted]
    if len(hits) == 1:
        return hits[0]
    names = ", ".join(row["name"] for row in ranked) or "(none finished)"
    if len(hits) > 1:
        raise UserError(f"--baseline {wanted}: {len(hits)} rows use method {wanted!r}; name one of them: {names}")
    other = [row["name"] for row in rows if row["name"] == wanted]
    why = " (it did not finish, so it has no score)" if other else ""
    raise UserError(f"--baseline {wanted}: no finished row by that name or method{why}; rows: {names}")


def _delta(row: dict, base: dict) -> dict | None:
    """Difference of means to the baseline; `noise` when it is within the seed spread of a
    difference, sqrt(std_row² + std_base²) (None when either row has a single seed)."""
    a, b = row["metric"], base["metric"]
    if a["mean"] is None or b["mean"] is None:
        return None
    value = a["mean"] - b["mean"]
    spread = (a["std"] ** 2 + b["std"] ** 2) ** 0.5 if a["std"] is not None and b["std"] is not None else None
    return {"value": value, "spread": spread, "noise": None if spread is None else abs(value) <= spread}
