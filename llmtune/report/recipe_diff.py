"""Hyperparameters from the runs' resolved recipes: which ones differ between rows."""

from __future__ import annotations

import json

IGNORED = frozenset({
    "output.dir", "train.seed", "eval.seed",            # where a run lands; the seed is the seeds column
    "train.log_every", "train.save_every", "train.keep_checkpoints", "train.eval_every",  # bookkeeping
    "method.name",                                     # the method column
})
UNUSED_BY_PROMPTING = ("method.", "train.")
"""A prompted evaluation trains nothing: its recipe's method and train sections are not used."""


def flatten(recipe: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in recipe.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def hyperparameters(recipe: dict, in_context: bool) -> dict[str, object]:
    flat = {k: v for k, v in flatten(recipe).items() if k not in IGNORED}
    if in_context:
        flat = {k: v for k, v in flat.items() if not k.startswith(UNUSED_BY_PROMPTING)}
    return flat


def group_key(recipe: dict, method: str | None) -> str:
    """Runs with the same recipe apart from the seed (and bookkeeping) form one row."""
    return json.dumps({"method": method, **hyperparameters(recipe, method == "in-context")},
                      sort_keys=True, default=str)


def differing_keys(params: list[dict[str, object]]) -> list[str]:
    """Keys whose value is not the same in every row (absent counts as a value), in first-seen order."""
    keys: list[str] = []
    for p in params:
        keys += [k for k in p if k not in keys]
    return [k for k in keys
            if len({json.dumps(p[k], sort_keys=True, default=str) if k in p else "<absent>" for p in params}) > 1]
