"""The manifest keys `llmtune compare` and `llmtune report` read, in one place.

The run session writes them; compare never re-derives one from metrics.jsonl. A key an
older run lacks is shown as unknown. `manifest_fields_for_compare()` lets a test check that
a session's manifest carries them all.
"""

from __future__ import annotations

COMPARE_FIELDS: dict[str, str] = {
    "status": '"running" | "finished" | "failed" | "diverged" | "stopped"',
    "error": "message when the run did not finish (may be absent or null when it did)",
    "method": "method name (`in-context` for a prompted evaluation)",
    "task": "data.task",
    "model": "model.name",
    "seed": "train.seed (eval.seed for a prompted evaluation)",
    "recipe_hash": "hash of the resolved recipe minus output (decides whether compare may reuse a run)",
    "trainable_parameters": "parameters that trained (head included)",
    "total_parameters": "all parameters of the model",
    "trainable_percent": "100 * trainable / total",
    "train_seconds": "time spent training (0 for a prompted evaluation)",
    "wall_seconds": "the whole run: loading, tokenizing, training, final evaluation, saving",
    "train_tokens": "real (non-padding) tokens trained on",
    "tokens_per_second": "train_tokens / train_seconds",
    "peak_memory_mb": "peak GPU memory allocated, or the process's peak resident set on CPU",
    "artifact_bytes": "size of final/ on disk (0 when nothing is saved)",
    "eval_identity": "what the final evaluation scored: {fingerprint, rows, labels, metric}",
    "final_eval": "headline scalars of the final evaluation {metric: value}",
}
"""Required keys: the session writes each of them for every run."""

OPTIONAL_FIELDS: dict[str, str] = {
    "eval_seconds": "time of the final evaluation (per-query cost = eval_seconds / eval_identity.rows)",
    "steps": "optimizer steps done",
    "total_steps": "optimizer steps planned",
}
"""Read when present (shown as unknown otherwise); not required of every run."""

EVAL_IDENTITY_FIELDS = ("fingerprint", "rows", "labels", "metric")
"""Two runs are ranked together only when all four agree (eval_identity.py)."""

STATUSES = ("running", "finished", "failed", "diverged", "stopped")
UNFINISHED = frozenset({"running", "stopped"})
"""A run in one of these states can still be resumed; compare --recipes resumes it."""


def manifest_fields_for_compare() -> tuple[str, ...]:
    """The manifest keys every run must carry for compare (see COMPARE_FIELDS)."""
    return tuple(COMPARE_FIELDS)


def missing_fields(manifest: dict) -> list[str]:
    """Required keys absent from a manifest (and eval_identity sub-keys), in COMPARE_FIELDS order."""
    finished = manifest.get("status") == "finished"
    missing = [key for key in COMPARE_FIELDS if key not in manifest and not (key == "error" and finished)]
    identity = manifest.get("eval_identity")
    if isinstance(identity, dict):
        missing += [f"eval_identity.{key}" for key in EVAL_IDENTITY_FIELDS if key not in identity]
    return missing
