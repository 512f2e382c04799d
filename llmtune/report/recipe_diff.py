"""Hyperparameters from the runs' resolved recipes: the method's non-default options, and
the other recipe keys whose values differ between rows."""

from __future__ import annotations

import json

IGNORED = frozenset({
    "output.dir", "train.seed", "eval.seed",            # where a run lands; the seed is the seeds column
    "train.log_every", "train.save_every", "train.keep_checkpoints", "train.eval_every",  # bookkeeping
})
UNUSED_BY_PROMPTING = ("method.", "train.")
"""A prompted evaluation trains nothing: its recipe's method and train sections are not used."""
PROMPTING_ONLY = ("eval.shots", "eval.demos", "eval.selection", "eval.encoder", "eval.max_length",
                  "eval.demo_separator", "eval.answer_separator", "eval.verbalizers", "eval.label_score",
                  "eval.templates")
"""Keys that only prompting reads: left out of a trained classifier's row."""


def flatten(recipe: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in recipe.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _relevant(recipe: dict, in_context: bool) -> dict[str, object]:
    flat = {k: v for k, v in flatten(recipe).items() if k not in IGNORED}
    unused = UNUSED_BY_PROMPTING if in_context else PROMPTING_ONLY
    return {k: v for k, v in flat.items() if not k.startswith(unused)}


def hyperparameters(recipe: dict, in_context: bool) -> dict[str, object]:
    """Every recipe key but the method section's (see method_options), seeds and bookkeeping."""
    return {k: v for k, v in _relevant(recipe, in_context).items() if not k.startswith("method.")}


def method_options(recipe: dict, in_context: bool) -> dict[str, object]:
    """The method's options that differ from its defaults (all of them for a method this
    install does not know). Showing only those keeps a table of several methods narrow."""
    section = recipe.get("method") or {}
    if in_context or not isinstance(section, dict):
        return {}
    options = {k: v for k, v in section.items() if k != "name"}
    try:
        from llmtune.methods.registry import get_method

        fields = get_method(section.get("name")).Config.model_fields
    except (KeyError, ImportError):
        return options
    out = {}
    for key, value in options.items():
        spec = fields.get(key)
        if spec is None or spec.is_required() or not _same(spec.get_default(call_default_factory=True), value):
            out[key] = value
    return out


def _same(default, value) -> bool:
    """16 and 16.0 are the same option (recipe.yaml writes what pydantic parsed)."""
    return default == value or _canon(default) == _canon(value)


def _canon(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def group_key(recipe: dict, method: str | None) -> str:
    """Runs with the same recipe apart from the seed (and bookkeeping) form one row."""
    return _canon({"method": method, **_relevant(recipe, method == "in-context")})


def differing_keys(params: list[dict[str, object]]) -> list[str]:
    """Keys with more than one value among the rows that have them, in first-seen order (a
    key only some rows have, such as a prompting option, differs only if those rows differ)."""
    keys: list[str] = []
    for p in params:
        keys += [k for k in p if k not in keys]
    return [k for k in keys if len({_canon(p[k]) for p in params if k in p}) > 1]
