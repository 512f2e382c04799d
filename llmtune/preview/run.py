"""`llmtune preview`: examples, counts, memory and (with --time) speed, as one result dict."""

from __future__ import annotations

from llmtune.errors import UserError
from llmtune.preview import examples as ex
from llmtune.preview.lengths import length_stats, planned_tokens

SUPERVISED = ("classification", "causal_lm", "sft")


def virtual_tokens(method) -> dict | None:
    """Learned positions that are not tokens of the input: a soft prompt's (in front of the
    input) or a prefix's (in front of every attention layer's keys and values)."""
    if method.virtual_tokens_at is None or not method.virtual_tokens:
        return None
    return {"where": method.virtual_tokens_at, "count": method.virtual_tokens}


def preview_recipe(loaded, n: int, split: str, time_steps: int, reporter) -> dict:
    from llmtune.data.prompt_style import describe
    from llmtune.methods.registry import method_for
    from llmtune.models.load import load_tokenizer

    r = loaded.recipe
    method = method_for(r.method)
    tok = load_tokenizer(r.model.name, r.model.trust_remote_code, r.model.revision)
    if r.data.task in SUPERVISED:
        data = ex.supervised(r, tok, split)
    else:
        data = ex.preference(r, tok, split, method)
    if not data.examples:
        raise UserError(f"--split {split}: the recipe has no {split} examples "
                        f"({'set data.eval or data.eval_fraction' if split == 'eval' else 'check data.train'})")
    virtual = virtual_tokens(method)
    stats = length_stats(data.examples, virtual["count"] if virtual and virtual["where"] == "input" else 0)
    result = {
        "recipe": str(loaded.path) if loaded.path else None, "model": r.model.name, "task": r.data.task,
        "method": r.method.name, "split": split, "shown": min(n, len(data.examples)), "examples_in_split": len(data.examples),
        "rows": _rows(data.summary), "rows_counted_over": "train and eval" if r.data.task in SUPERVISED else split,
        "rendering": describe(data.summary), "notes": data.notes,
        "virtual_tokens": virtual, "lengths": stats,
        "tokens": planned_tokens(stats, len(data.examples), r.train) if split == "train" else None,
        "examples": data.examples[:n], "tokenizer": tok,
    }
    result["memory"] = _memory(r, method, data, tok, stats, reporter)
    if time_steps:
        result["time"] = _time(r, method, data, tok, time_steps, reporter)
    return result


def _rows(summary: dict) -> dict:
    keep = ("train_rows", "eval_rows", "truncated", "dropped_empty", "dropped_truncated", "dropped_too_long")
    return {k: summary[k] for k in keep if k in summary}


def _memory(r, method, data, tok, stats, reporter) -> dict:
    from llmtune.preview.memory import estimate, model_shape

    try:
        shape = model_shape(r, method, data.summary.get("labels"), tok)
    except Exception as exc:  # an architecture that cannot be built weightless: say so, skip the estimate
        reporter.warn(f"memory estimate skipped: could not build {r.model.name!r} on the meta device "
                      f"({type(exc).__name__}: {exc})")
        return {"skipped": str(exc)}
    pairs = r.data.task in ("preference", "unpaired_preference")
    sequences = r.train.batch_size * (2 if pairs else 1)
    # Online RL trains on prompt + generated completion: count the completion budget in.
    length = int(stats["max"]) + method.generated_tokens()
    out = estimate(shape, r, sequences, length)
    out.update({"trainable_parameters": shape.trainable, "total_parameters": shape.total,
                "trainable_percent": round(100 * shape.trainable / max(shape.total, 1), 4)})
    if shape.reference_params:
        out["reference_parameters"] = shape.reference_params
    return out


def _time(r, method, data, tok, steps: int, reporter) -> dict:
    from llmtune.preview import timing

    reporter.log(f"timing {steps} optimizer steps (after {timing.WARMUP} warm-up) on the first batches")
    if r.data.task in SUPERVISED:
        return timing.time_supervised(r, method, data.train_raw, data.summary.get("labels"), tok, steps, reporter)
    measured = timing.time_preference(r, method, data.examples, tok, steps)
    if measured is None:
        return {"skipped": "online RL is not timed here: generation dominates its steps; run `llmtune train "
                           "RECIPE --set train.max_steps=3` to measure it"}
    return measured
