"""`llmtune report RUN_DIR`: one run's recipe digest, costs and final scores as a dict and as
markdown. Per-class scores come from eval.json (written by `llmtune eval RUN_DIR`), when the
run has one."""

from __future__ import annotations

import json

from llmtune.report.fields import missing_fields
from llmtune.report.recipe_diff import flatten
from llmtune.report.render import fmt_value, is_fraction

DIGEST_KEYS = ("model.name", "model.pooling", "data.task", "data.train.path", "data.train.hub",
               "data.train.limit", "data.eval.path", "data.eval.hub", "data.eval_fraction", "data.max_length",
               "train.epochs", "train.max_steps", "train.batch_size", "train.grad_accum", "train.lr",
               "train.scheduler", "train.warmup_ratio", "train.weight_decay", "train.precision", "train.seed",
               "eval.limit", "eval.shots", "eval.selection", "eval.seed")
COST_KEYS = ("trainable_parameters", "total_parameters", "trainable_percent", "artifact_bytes", "peak_memory_mb",
             "wall_seconds", "train_seconds", "eval_seconds", "train_tokens", "tokens_per_second", "steps",
             "total_steps")


def run_summary(rec) -> dict:
    m = rec.manifest
    flat = flatten(rec.recipe)
    in_context = rec.method == "in-context"
    digest = {k: flat[k] for k in flat if k.startswith("method.") and not in_context}
    digest.update({k: flat[k] for k in DIGEST_KEYS if flat.get(k) is not None
                   and not (in_context and k.startswith("train."))})
    per_class, source = _per_class(rec)
    return {"run": str(rec.path), "status": rec.status, "error": rec.error, "method": rec.method,
            "task": m.get("task"), "model": m.get("model"), "seed": m.get("seed"), "recipe_hash": m.get("recipe_hash"),
            "recipe": digest, **{k: m.get(k) for k in COST_KEYS}, "eval_identity": m.get("eval_identity"),
            "final_eval": rec.final_eval, "per_class": per_class, "per_class_source": source,
            "missing_manifest_keys": missing_fields(m)}


def _per_class(rec) -> tuple[dict | None, str | None]:
    path = rec.path / "eval.json"
    if not path.exists():
        return None, None
    try:
        per_class = json.loads(path.read_text()).get("per_class")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None, None
    return (per_class, "eval.json") if isinstance(per_class, dict) and per_class else (None, None)


def _q(v, spec: str = ",.0f", suffix: str = "") -> str:
    return "?" if v is None else f"{v:{spec}}{suffix}"


def markdown(s: dict, plots: dict[str, str]) -> str:
    from pathlib import Path

    lines = [f"# Run report: {Path(s['run']).name}", "",
             f"`{s['run']}`: status **{s['status']}**, method {s['method'] or '?'}, model {s['model'] or '?'}, "
             f"task {s['task'] or '?'}, seed {s['seed'] if s['seed'] is not None else '?'}, "
             f"recipe hash {s['recipe_hash'] or '?'}", ""]
    if s["error"]:
        lines += [f"**Error:** {' '.join(s['error'].split())}", ""]
    lines += ["## Recipe", "", "| key | value |", "| --- | --- |"]
    lines += [f"| {k} | {fmt_value(v)} |" for k, v in s["recipe"].items()]
    trainable = (f"{_q(s['trainable_parameters'])} of {_q(s['total_parameters'])} "
                 f"({_q(s['trainable_percent'], '.3g', '%')})")
    artifact = "?" if s["artifact_bytes"] is None else f"{s['artifact_bytes'] / 1e6:,.2f} MB"
    lines += ["", "## Cost", "", "| | |", "| --- | --- |", f"| trainable parameters | {trainable} |",
              f"| artifact (final/ on disk) | {artifact} |", f"| peak memory | {_q(s['peak_memory_mb'], ',.0f', ' MB')} |",
              f"| wall time | {_q(s['wall_seconds'], ',.1f', ' s')} |",
              f"| train time | {_q(s['train_seconds'], ',.1f', ' s')} |",
              f"| train tokens (real) | {_q(s['train_tokens'])} |",
              f"| tokens/s | {_q(s['tokens_per_second'])} |",
              f"| steps | {_q(s['steps'])} of {_q(s['total_steps'])} |"]
    lines += ["", "## Final evaluation", ""]
    if s["final_eval"]:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_metric(k, v)} |" for k, v in s["final_eval"].items()]
    else:
        lines.append("No final evaluation recorded.")
    if s["per_class"]:
        lines += ["", f"### Per class (from {s['per_class_source']})", "",
                  "| label | precision | recall | f1 | support |", "| --- | --- | --- | --- | --- |"]
        for label, row in s["per_class"].items():
            cells = [f"{row.get(k, 0):.4f}" for k in ("precision", "recall", "f1")]
            lines.append(f"| {label} | {' | '.join(cells)} | {row.get('support', '?')} |")
    elif s["task"] == "classification":
        lines += ["", "Per-class scores: run `llmtune eval RUN_DIR` to write eval.json, then report again."]
    if s["missing_manifest_keys"]:
        lines += ["", f"Not recorded in this run's manifest (shown as ?): {', '.join(s['missing_manifest_keys'])}."]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({Path(path).name})" for name, path in plots.items()]
    return "\n".join(lines) + "\n"


def _metric(name: str, value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" + (f" ({value * 100:.1f}%)" if is_fraction(name) else "")
    return fmt_value(value)
