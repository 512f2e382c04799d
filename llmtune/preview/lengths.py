"""Length statistics of a split and how many tokens a run will push through the model."""

from __future__ import annotations

import math


def percentile(sorted_values: list[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted values."""
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def length_stats(examples, virtual: int = 0) -> dict:
    """min/median/p95/max tokens per sequence (virtual input tokens included), and the
    tokens the loss trains on."""
    lengths = sorted(len(s.ids) + virtual for ex in examples for s in ex.sequences)
    masked = [s.trains for ex in examples for s in ex.sequences if s.trains is not None]
    trained = sum(sum(m) for m in masked) if masked else None  # None: the task has no per-token loss
    if not lengths:
        return {"sequences": 0, "min": 0, "median": 0, "p95": 0, "max": 0, "tokens": 0, "trained_tokens": 0}
    return {"sequences": len(lengths), "min": lengths[0], "median": percentile(lengths, 0.5),
            "p95": percentile(lengths, 0.95), "max": lengths[-1], "tokens": sum(lengths), "trained_tokens": trained}


def planned_tokens(stats: dict, n_examples: int, train_cfg) -> dict:
    """Tokens per epoch and over the planned run (epochs, or max_steps batches)."""
    per_epoch = stats["tokens"]
    steps_per_epoch = max(1, math.ceil(n_examples / train_cfg.batch_size / train_cfg.grad_accum))
    if train_cfg.max_steps:
        steps = train_cfg.max_steps
        epochs = steps / steps_per_epoch
    else:
        epochs = train_cfg.epochs
        steps = max(1, math.ceil(epochs * n_examples / train_cfg.batch_size / train_cfg.grad_accum))
    trained = stats["trained_tokens"]
    return {"per_epoch": per_epoch, "trained_per_epoch": trained, "steps_per_epoch": steps_per_epoch,
            "steps": steps, "epochs": round(epochs, 4), "total": round(per_epoch * epochs),
            "trained_total": None if trained is None else round(trained * epochs)}
