"""The two flows every trl-backed method follows: train a run, and evaluate one.

Imported only inside fit/evaluate (heavy imports)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from llmtune.data.preference import load_preference_data
from llmtune.methods.preference.base import Setup
from llmtune.methods.preference.session import (RunCallback, clean_eval, interactive, quiet_libraries,
                                                to_dataset, train_and_save, training_args, use_llmtune_output)
from llmtune.models.load import load_tokenizer


def _data_line(data) -> str:
    s = data.summary
    line = f"data: {len(data.train)} train / {len(data.eval)} eval rows ({'chat' if data.chat else 'text'})"
    if s.get("dropped_empty"):
        line += f"; {s['dropped_empty']} empty rows dropped (data.empty_rows: drop)"
    return line


def fit_trl(ctx, method) -> dict:
    r, rep = ctx.recipe, ctx.reporter
    method.check(r)
    tty = interactive(rep)
    with quiet_libraries(tty), tempfile.TemporaryDirectory(prefix="llmtune-") as work:
        tok = load_tokenizer(r.model.name, r.model.trust_remote_code, r.model.revision)
        data = load_preference_data(r.data, ctx.base_dir)
        data.train = method.prepare_rows(data.train, tok, r)
        data.eval = method.prepare_rows(data.eval, tok, r) if data.eval else []
        rep.log(_data_line(data))
        torch.manual_seed(r.train.seed)
        model = method.load_model(r, tok)
        setup = Setup(recipe=r, base_dir=ctx.base_dir, workdir=Path(work), reporter=rep, training=True)
        config_cls, options = method.trl_config(r)
        args = training_args(config_cls, r, ctx.run.checkpoints, interactive=tty, has_eval=bool(data.eval),
                             **options)
        trainer = method.build_trainer(setup, model, tok, to_dataset(data.train), to_dataset(data.eval), args,
                                       [RunCallback(ctx.run, rep)], method.reference(setup, model))
        use_llmtune_output(trainer)
        return train_and_save(ctx, method, trainer, tok, data, method.manifest_extra(setup))


def evaluation_rows(loaded, limit: int | None) -> tuple[list[dict], str]:
    """The eval split (or the training rows when there is none), first `limit` rows."""
    r = loaded.recipe
    data = load_preference_data(r.data, loaded.base_dir)
    rows, split = (data.eval, "eval") if data.eval else (data.train, "train")
    limit = limit or r.eval.limit
    return (rows[:limit] if limit else rows), split


def evaluate_trl(method, loaded, final: Path | None, limit: int | None, reporter) -> dict:
    """Score final/ (or the base model) on eval rows with the trainer's own evaluation:
    pairwise accuracy and margin for a reward model; the implicit reward's accuracy and
    margins of the policy against the base model (the reference) for DPO/KTO/ORPO."""
    r = loaded.recipe
    with quiet_libraries(False), tempfile.TemporaryDirectory(prefix="llmtune-eval-") as work:
        tok = load_tokenizer(str(final)) if final else load_tokenizer(r.model.name, r.model.trust_remote_code,
                                                                       r.model.revision)
        rows, split = evaluation_rows(loaded, limit)
        rows = method.prepare_rows(rows, tok, r)
        torch.manual_seed(r.train.seed)
        model = method.load_trained(r, tok, final) if final else method.load_model(r, tok)
        setup = Setup(recipe=r, base_dir=loaded.base_dir, workdir=Path(work), reporter=reporter, training=False)
        config_cls, options = method.trl_config(r)
        args = training_args(config_cls, r, Path(work) / "out", interactive=False, has_eval=True, **options)
        ds = to_dataset(rows)
        trainer = method.build_trainer(setup, model, tok, ds, ds, args, [], method.reference(setup, model))
        use_llmtune_output(trainer)
        metrics = clean_eval(trainer.evaluate())
    return {"split": split, "rows": len(rows), **metrics}
