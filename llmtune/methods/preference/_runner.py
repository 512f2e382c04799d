"""The two flows every trl-backed method follows: train inside a run, and evaluate one.

Imported only inside fit/evaluate (heavy imports)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from llmtune.data.cache import tokenizer_fingerprint
from llmtune.data.preference import load_preference_data
from llmtune.errors import DataError, UserError
from llmtune.methods.job import Outcome
from llmtune.methods.preference._models import is_adapter, parameter_counts
from llmtune.methods.preference._trainer import (RunCallback, clean_eval, last_checkpoint, quiet_libraries, to_dataset,
                                                 training_args, use_llmtune_output)
from llmtune.methods.preference.setup import Setup
from llmtune.models.chat_template import template_hash
from llmtune.models.load import load_tokenizer
from llmtune.models.precision import keep_trainable_in


def _data_line(data) -> str:
    s = data.summary
    line = f"data: {len(data.train)} train / {len(data.eval)} eval rows ({'chat' if data.chat else 'text'})"
    if s.get("dropped_empty"):
        line += f"; {s['dropped_empty']} empty rows dropped (data.empty_rows: drop)"
    return line


def build(method, setup, model, tok, train, eval, args, callbacks):
    """The method's trainer. trl checks option combinations as it builds (ValueError): those
    are the recipe's to fix, so they end as a user error, not a traceback."""
    try:
        return method.build_trainer(setup, model, tok, train, eval, args, callbacks, method.reference(setup, model))
    except ValueError as exc:
        raise UserError(f"method {method.name}: trl refused this configuration: {exc}") from None


def _report_filtered(trainer, data, recipe, rep) -> None:
    """Some trainers (the reward trainer) drop rows longer than max_length instead of cutting them."""
    kept = len(trainer.train_dataset) if hasattr(trainer.train_dataset, "__len__") else len(data.train)
    if kept == 0:
        raise DataError(f"every training row is longer than data.max_length ({recipe.data.max_length} tokens) and "
                        f"the trainer dropped them all; raise data.max_length")
    if kept < len(data.train):
        rep.warn(f"{len(data.train) - kept} of {len(data.train)} training rows are longer than data.max_length "
                 f"({recipe.data.max_length} tokens) and were dropped by the trainer")


def _check_chat_template(data, tok, recipe) -> None:
    if data.chat and getattr(tok, "chat_template", None) is None:
        raise DataError(f"{recipe.data.train.path or recipe.data.train.hub}: the rows are chat messages, but "
                        f"model {recipe.model.name!r} has a tokenizer without a chat template to render them; "
                        f"use a chat model, or give prompt/chosen/rejected as plain text")


def fit_trl(job, method) -> Outcome:
    r, rep = job.recipe, job.reporter
    method.check(r)
    with quiet_libraries(job.interactive), tempfile.TemporaryDirectory(prefix="llmtune-") as work:
        tok = load_tokenizer(r.model.name, r.model.trust_remote_code, r.model.revision)
        data = load_preference_data(r.data)
        data.train = method.prepare_rows(data.train, tok, r)
        data.eval = method.prepare_rows(data.eval, tok, r) if data.eval else []
        data.summary.setdefault("prompt_style", "chat" if data.chat else "text")  # what a later stage follows
        rep.log(_data_line(data))
        _check_chat_template(data, tok, r)
        torch.manual_seed(r.train.seed)
        model = method.load_model(r, tok)
        setup = Setup(recipe=r, workdir=Path(work), reporter=rep, training=True)
        config_cls, options = method.trl_config(r)
        args = training_args(config_cls, r, job.checkpoints, has_eval=bool(data.eval), **options)
        callback = RunCallback(job)
        # trl sees the eval rows only to evaluate during training; the final evaluation is ours
        # (per pair), so no trl pass over them (nor a precompute of their reference) otherwise.
        evals = to_dataset(data.eval) if r.train.eval_every else None
        trainer = build(method, setup, model, tok, to_dataset(data.train), evals, args, [callback])
        keep_trainable_in(trainer.model, r.model.dtype)  # peft adapters too, as the manifest records
        use_llmtune_output(trainer)
        _report_filtered(trainer, data, r, rep)
        return _train(job, method, trainer, callback, tok, data, method.manifest_extra(setup))


def _train(job, method, trainer, callback, tok, data, extra: dict) -> Outcome:
    rep = job.reporter
    trainable, total = parameter_counts(trainer.model)
    rep.log(f"method {method.name}: {trainable:,} trainable of {total:,} parameters "
            f"({100 * trainable / total:.3f}%)")
    resume_from = last_checkpoint(job.checkpoints) if job.resume else None
    if job.resume:
        rep.log(f"resuming from {resume_from.name}" if resume_from else
                "no complete checkpoint to resume from; starting from the beginning")
    job.begin({"trainer": type(trainer).__name__, "data_fingerprint": data.fingerprint,
               "data_summary": data.summary, "tokenizer_hash": tokenizer_fingerprint(tok),
               "chat_template_hash": template_hash(tok),
               "trainable_parameters": trainable, "total_parameters": total, **extra},
              resumed_step=int(resume_from.name.split("-")[1]) if resume_from else 0)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    outcome = Outcome(steps=trainer.state.global_step, trainable_parameters=trainable, total_parameters=total,
                      tokenizer=tok, save=lambda folder: _save_model(trainer, folder),
                      info={"model_kind": method.model_kind, "pooling": None, "labels": None},
                      manifest={"total_steps": trainer.state.max_steps}, train_tokens=callback.tokens,
                      last_checkpoint=last_checkpoint(job.checkpoints))
    if callback.diverged:
        outcome.diverged = f"loss {callback.diverged[1]} at step {callback.diverged[0]}"
    elif job.stop_requested():
        outcome.stopped_by = job.stop_requested()
    elif data.eval:
        started = time.perf_counter()
        outcome.eval = final_eval(job, method, trainer, tok, data.eval)
        outcome.eval_rows = len(data.eval)
        outcome.manifest["eval_seconds"] = time.perf_counter() - started
    return outcome


def final_eval(job, method, trainer, tok, rows: list[dict]) -> dict:
    """The trained model on the held-out rows, scored per pair (as `llmtune eval` scores it)
    and logged as an `eval_` record."""
    from llmtune.methods.preference._pair_eval import preference_eval

    if method.pair_score is None:  # online RL: trl's own evaluation (sampled rewards)
        # handed over here: trl holds the eval rows only when train.eval_every asked for them
        return clean_eval(trainer.evaluate(eval_dataset=to_dataset(rows)))  # RunCallback logs it
    reference = getattr(trainer, "ref_model", None)
    if reference is None and not hasattr(trainer.model, "disable_adapter"):
        # a full finetune whose reference log-probs trl precomputed: the base again, frozen
        setup = Setup(recipe=job.recipe, workdir=job.checkpoints, reporter=job.reporter, training=False)
        reference = method.reference(setup, trainer.model)
    result = preference_eval(method, trainer.model, reference, tok, rows, job.recipe)
    job.log({"step": trainer.state.global_step,
             **{f"eval_{k}": v for k, v in result.items() if isinstance(v, (int, float))}})
    return result


def _save_model(trainer, folder: Path) -> None:
    trainer.save_model(str(folder))
    (folder / "training_args.bin").unlink(missing_ok=True)  # a pickle; final/ holds only safe formats


def evaluation_rows(recipe, limit: int | None) -> tuple[list[dict], str]:
    """The eval split (or the training rows when there is none), first `limit` rows."""
    data = load_preference_data(recipe.data)
    rows, split = (data.eval, "eval") if data.eval else (data.train, "train")
    limit = limit or recipe.eval.limit
    return (rows[:limit] if limit else rows), split


def evaluate_trl(method, recipe, final: Path | None, limit: int | None, reporter) -> dict:
    """Score final/ (or the base model) on eval rows, pair by pair: pairwise accuracy and
    margin for a reward model; the implicit reward's accuracy and margins of the policy
    against the base model (the reference) for DPO/KTO/ORPO (_pair_eval.py)."""
    from llmtune.methods.preference._pair_eval import preference_eval

    r = recipe
    with quiet_libraries(False), tempfile.TemporaryDirectory(prefix="llmtune-eval-") as work:
        tok = load_tokenizer(str(final)) if final else load_tokenizer(r.model.name, r.model.trust_remote_code,
                                                                       r.model.revision)
        rows, split = evaluation_rows(r, limit)
        rows = method.prepare_rows(rows, tok, r)
        torch.manual_seed(r.train.seed)
        model = method.load_trained(r, tok, final) if final else method.load_model(r, tok)
        setup = Setup(recipe=r, workdir=Path(work), reporter=reporter, training=False)
        # The base model is its own reference; a LoRA policy's is its base (the adapter off).
        reference = model if final is None else None if is_adapter(final) else method.reference(setup, model)
        metrics = preference_eval(method, model, reference, tok, rows, r)
    return {"split": split, "rows": len(rows), **metrics}
