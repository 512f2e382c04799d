"""`llmtune eval`: load a trained run (or a recipe's base model) and score its eval split."""

from __future__ import annotations

import json
from pathlib import Path

from llmtune import atomic
from llmtune.device import default_device
from llmtune.errors import UserError
from llmtune.runs.open import Target, open_target


def evaluate_target(target: Path, overrides: list[str], limit: int | None, reporter, store_demos=None,
                    store_retrieval=None) -> dict:
    """`store_demos`: how `eval.selection: store` picks demonstrations (the caller hands in
    llmtune.index.demos.select_from_store; the index sits above this floor). `store_retrieval`:
    how a retrieval recipe with `eval.store` is searched (llmtune.index.store_eval.evaluate_through_store)."""
    t = open_target(target, overrides)
    r = t.recipe
    if t.final is not None:
        from llmtune.models.chat_template import check_saved_tokenizer

        check_saved_tokenizer(t.final, reporter, "eval")
    head = {"target": str(target), "task": r.data.task, "method": r.method.name}
    if r.data.task == "retrieval" and r.eval.store:
        if store_retrieval is None:
            raise UserError("eval.store: this command cannot search a store; run `llmtune eval`")
        return _write_eval(t.final, {**head, **store_retrieval(t, limit, reporter)})
    custom = t.method.evaluate(r, t.final, limit, reporter)
    if custom is not None:
        return _write_eval(t.final, {**head, **custom})
    limit = limit or r.eval.limit
    # A classification recipe is scored by prompting when it asks to be, or when its method
    # trained no classifier (in-context: the base causal LM answers).
    prompted = r.eval.prompting or t.method.result_kind(r.data.task) == "causal_lm"
    if prompted and r.data.task == "classification":
        metrics = _prompted_classification(t, limit, reporter, store_demos)
    else:
        if r.eval.prompting and r.data.task != "sft":
            raise UserError(f"eval.shots/templates/verbalizers apply to classification and sft data, not "
                            f"data.task {r.data.task!r}; remove them from the eval section")
        metrics = _supervised(t, limit, reporter, store_demos)
    return _write_eval(t.final, {**head, **metrics})


def _supervised(t: Target, limit: int | None, reporter, store_demos) -> dict:
    """The model as trained: head predictions or LM loss; for sft also generated answers."""
    import torch

    from llmtune.data.pipeline import prepare_data
    from llmtune.evaluate.supervised import evaluate_examples
    from llmtune.models.build import build_task_model

    r = t.recipe
    tok, model, labels = t.tokenizer(), t.trained_model(), t.labels
    data = prepare_data(r.data, tok)
    if labels is None:
        labels = data.labels
    if model is None:
        torch.manual_seed(r.train.seed)
        model = build_task_model(r, labels)  # the untrained base: a baseline (random head)
    examples = data.eval or data.train
    if limit:
        examples = examples[:limit]
    device = default_device()
    model.to(device)
    metrics = evaluate_examples(model, examples, batch_size=r.eval.batch_size, pad_id=tok.pad_token_id,
                                labels=labels, device=device)
    result = {"split": "eval" if data.eval else "train", **metrics}
    if r.data.task == "sft" and (r.eval.generate or r.eval.prompting):
        from llmtune.evaluate.prompted import evaluate_prompted

        model.eval()
        result.update(evaluate_prompted(model.body, tok, r, limit, reporter, device, store_demos))
    return result


def _prompted_classification(t: Target, limit: int | None, reporter, store_demos) -> dict:
    """Classification by prompting a causal LM: the base model (a recipe) or a run that
    trained a causal LM. The model is built as a causal LM whatever data.task says."""
    import torch

    from llmtune.evaluate.prompted import evaluate_prompted
    from llmtune.evaluate.prompted_model import as_causal, refuse_an_encoder, refuse_an_encoder_name
    from llmtune.models.build import build_task_model

    r = t.recipe
    if t.final is not None and t.method.result_kind(t.info.get("task") or r.data.task) == "classifier":
        raise UserError(f"{t.run_dir}: this run trained a classification head; prompting (eval.shots, "
                        f"eval.templates, eval.verbalizers) needs a causal LM. Evaluate the run without them, "
                        f"or prompt the base model: `llmtune eval <recipe>`")
    refuse_an_encoder_name(r)
    causal = as_causal(r)
    tok, model = t.tokenizer(), t.trained_model(causal)
    if model is None:
        model = build_task_model(causal, None)
    refuse_an_encoder(r, model.body)
    device = default_device()
    model.to(device).eval()
    with torch.inference_mode():
        metrics = evaluate_prompted(model.body, tok, r, limit, reporter, device, store_demos)
    split = "eval" if (r.data.eval is not None or r.data.eval_fraction > 0) else "train"
    return {"split": split, **metrics}


def _write_eval(final: Path | None, result: dict) -> dict:
    """A run's eval.json sits beside final/ (written atomically)."""
    if final is not None:
        atomic.write_text(final.parent / "eval.json", json.dumps(result, indent=2, default=str) + "\n")
    return result
