"""Run a trl trainer as an llmtune run: the recipe's train section mapped onto trl's config,
metrics.jsonl, manifest.json, checkpoints and --resume, signals, and final/.

Imported only inside fit/evaluate (it imports torch, transformers, trl and datasets)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import TrainerCallback

from llmtune.errors import TrainingDiverged, UserError
from llmtune.methods.preference.models import parameter_counts
from llmtune.models.chat_template import template_hash
from llmtune.models.task_model import write_info
from llmtune.train.run_dir import build_manifest, peak_memory_mb, read_manifest, write_final, write_manifest

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# trl's log keys that are bookkeeping, not measurements.
_SKIP_KEYS = {"epoch", "total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second",
              "train_loss", "step_time", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}
# What a log line shows first (metrics.jsonl keeps everything).
_HEADLINE = ("loss", "lr", "rewards/accuracies", "rewards/margins", "accuracy", "margin", "reward", "reward_std",
             "kl", "tokens_per_s")

# Eval keys (without their `eval_` prefix) that are timings and counters, not results.
_EVAL_BOOKKEEPING = frozenset({"runtime", "samples_per_second", "steps_per_second", "epoch", "num_tokens",
                         "model_preparation_time"})


def precision_flags(precision: str) -> dict:
    """use_cpu/bf16/fp16 from train.precision and the hardware (trl defaults bf16 on)."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and not cuda:
        raise UserError("train.precision fp16 needs a GPU; use fp32 or bf16 on a CPU")
    return {"use_cpu": not cuda, "bf16": precision == "bf16", "fp16": precision == "fp16"}


def training_args(config_cls, recipe, output_dir: Path, *, has_eval: bool, **method_args):
    """One trl config from the recipe's train/eval sections plus the method's own options."""
    t = recipe.train
    kw = dict(
        output_dir=str(output_dir), learning_rate=t.lr, per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=recipe.eval.batch_size, gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs, max_steps=t.max_steps or -1, seed=t.seed, data_seed=t.seed,
        weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio,
        lr_scheduler_type="constant_with_warmup" if t.scheduler == "constant" and t.warmup_ratio else t.scheduler,
        max_grad_norm=t.max_grad_norm or 0.0, logging_strategy="steps", logging_steps=t.log_every,
        save_strategy="steps" if t.save_every else "no", save_steps=t.save_every or 500,
        save_total_limit=t.keep_checkpoints,
        eval_strategy="steps" if t.eval_every and has_eval else "no", eval_steps=t.eval_every,
        # llmtune draws its own progress bar (on a terminal only): see RunCallback.
        report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        **precision_flags(t.precision), **method_args,
    )
    fields = {f.name for f in dataclasses.fields(config_cls)}
    # Gradient checkpointing (trl's default) slows small models; transformers 5 renamed it.
    kw["activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"] = False
    try:
        return config_cls(**{k: v for k, v in kw.items() if k in fields})
    except ValueError as exc:
        raise UserError(f"the train section does not fit {config_cls.__name__}: {exc}") from None


@contextmanager
def quiet_libraries(interactive: bool):
    """No dataset-map progress bars outside a terminal, no library deprecation chatter."""
    import datasets
    from transformers.utils import logging as hf_logging

    bars = datasets.is_progress_bar_enabled()
    hf_bars = hf_logging.is_progress_bar_enabled()
    if not interactive:
        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r".*(experimental|will be removed).*")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()
        if hf_bars:
            hf_logging.enable_progress_bar()


def to_dataset(rows: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(rows) if rows else None


def use_llmtune_output(trainer) -> None:
    """transformers prints log dicts on stdout (PrinterCallback, ProgressCallback), which
    would corrupt `--json`; RunCallback logs to stderr and draws llmtune's progress bar."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cls in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cls)


class RunCallback(TrainerCallback):
    """metrics.jsonl records, log lines and the progress bar (on a terminal) from trl's
    logs; Ctrl-C/SIGTERM save a checkpoint and stop; a non-finite loss stops the run."""

    def __init__(self, run, reporter):
        self.run = run
        self.rep = reporter
        self.stop = None
        self.diverged: tuple[int, float] | None = None
        self._tokens = None
        self._time = time.perf_counter()
        self._bar = None
        self._advance = None

    def on_train_begin(self, args, state, control, **kw):
        self._bar = self.rep.progress(state.max_steps, "train", completed=state.global_step)
        self._advance = self._bar.__enter__()

    def on_train_end(self, args, state, control, **kw):
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def on_step_end(self, args, state, control, **kw):
        if self._advance is not None:
            self._advance(1)
        if self.stop is not None and self.stop.signal:
            control.should_save = True
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kw):
        logs = dict(logs or {})
        if "train_runtime" in logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch}
        for key, value in logs.items():
            if key in _SKIP_KEYS or not isinstance(value, (int, float)):
                continue
            record["lr" if key == "learning_rate" else key] = value
        now = time.perf_counter()
        if "num_tokens" in logs:
            if self._tokens is not None:
                record["tokens_per_s"] = (logs["num_tokens"] - self._tokens) / max(now - self._time, 1e-9)
            self._tokens = logs["num_tokens"]
        self._time = now
        if state.is_world_process_zero:
            self.run.log_metrics(record)
        prefix = "eval_" if any(k.startswith("eval_") for k in record) else ""
        shown = [(k, record[prefix + k]) for k in _HEADLINE if prefix + k in record]
        self.rep.log(f"{'eval at ' if prefix else ''}step {state.global_step}/{state.max_steps} " +
                     " ".join(f"{k} {v:.4g}" for k, v in shown))
        loss = logs.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            self.diverged = (state.global_step, loss)
            control.should_training_stop = True


def last_checkpoint(folder: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*")
             if (m := _CHECKPOINT.match(p.name)) and (p / "trainer_state.json").exists()]
    return max(found)[1] if found else None


def drop_metrics_after(run, step: int) -> None:
    """On resume, records written after the checkpoint belong to the lost part of the run."""
    kept = [rec for rec in run.read_metrics() if rec.get("step", 0) <= step] if step else []
    tmp = run.metrics.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(rec) + "\n" for rec in kept))
    os.replace(tmp, run.metrics)


def _warn_if_changed(old: dict | None, new: dict, rep) -> None:
    for key in ("method", "model", "data_fingerprint", "seed", "versions", "chat_template_hash"):
        if old and old.get(key) != new.get(key):
            rep.warn(f"resuming, but {key} changed since the run started: {old.get(key)!r} -> {new.get(key)!r}; "
                     f"the result may differ from an uninterrupted run")


def train_and_save(ctx, method, trainer, tok, data, extra_manifest: dict | None = None) -> dict:
    """Train (resuming if asked), log, write manifest and final/; returns fit's result."""
    from llmtune.data.cache import tokenizer_fingerprint
    from llmtune.train.loop import StopRequested

    r, run, rep = ctx.recipe, ctx.run, ctx.reporter
    trainable, total = parameter_counts(trainer.model)
    rep.log(f"method {method.name}: {trainable:,} trainable of {total:,} parameters "
            f"({100 * trainable / total:.3f}%)")
    manifest = build_manifest(ctx.loaded.path, r.train.seed, {
        "method": method.name, "task": r.data.task, "model": r.model.name, "trainer": type(trainer).__name__,
        "data_fingerprint": data.fingerprint, "data_summary": data.summary,
        "tokenizer_hash": tokenizer_fingerprint(tok), "trainable_parameters": trainable,
        "chat_template_hash": template_hash(tok),
        "total_parameters": total, "trainable_percent": 100 * trainable / total,
        **(extra_manifest or {}), **ctx.manifest_extra,
    })
    resume_from = None
    if ctx.resume:
        resume_from = last_checkpoint(run.checkpoints)
        if resume_from is None:
            rep.log("no complete checkpoint to resume from; starting from the beginning")
        else:
            _warn_if_changed(read_manifest(run), manifest, rep)
            rep.log(f"resuming from {resume_from.name}")
    drop_metrics_after(run, int(resume_from.name.split("-")[1]) if resume_from else 0)
    write_manifest(run, manifest)

    callback = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, RunCallback))
    start = time.perf_counter()
    with StopRequested() as stop:
        callback.stop = stop
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - start
    step = trainer.state.global_step
    if callback.diverged:
        last = last_checkpoint(run.checkpoints)
        keep = f"; the last good checkpoint is {last}" if last else ""
        raise TrainingDiverged(f"training diverged: loss {callback.diverged[1]} at step {callback.diverged[0]}{keep}. "
                               f"Lower train.lr or check the data")
    if stop.signal:
        name = signal.Signals(stop.signal).name
        rep.log(f"{name}: stopped at step {step}; checkpoint saved in {run.checkpoints}. Resume with: "
                f"llmtune train {ctx.loaded.path or 'RECIPE'} --output {run.path} --resume")
        raise SystemExit(128 + stop.signal)

    final_eval = {}
    if trainer.eval_dataset is not None:
        final_eval = clean_eval(trainer.evaluate())  # RunCallback logs it
    if trainer.is_world_process_zero():
        save_final(run, trainer, tok, method, r)
        manifest.update({"train_seconds": seconds, "steps": step, "total_steps": trainer.state.max_steps,
                         "peak_memory_mb": peak_memory_mb(), "final_eval": final_eval})
        write_manifest(run, manifest)
    return {"steps": step, "train_seconds": seconds, "trainable_parameters": trainable, "total_parameters": total,
            "eval": final_eval, "run_dir": str(run.path)}


def clean_eval(metrics: dict) -> dict:
    """trl's eval dict without the `eval_` prefix and the timing bookkeeping."""
    out = {}
    for key, value in metrics.items():
        key = key[len("eval_"):] if key.startswith("eval_") else key
        if key in _EVAL_BOOKKEEPING or not isinstance(value, (int, float)):
            continue
        out[key] = value
    return out


def save_final(run, trainer, tok, method, recipe) -> None:
    """final/: model or adapter, tokenizer, llmtune.json (written atomically)."""
    def fill(folder):
        trainer.save_model(str(folder))
        tok.save_pretrained(folder)
        for leftover in ("training_args.bin",):  # a pickle; final/ holds only safe formats
            (folder / leftover).unlink(missing_ok=True)
        write_info(folder, {"task": recipe.data.task, "method": method.name, "base_model": recipe.model.name,
                            "model_kind": method.model_kind, "pooling": None, "labels": None})

    write_final(run, fill)


def interactive(reporter) -> bool:
    return bool(getattr(reporter, "interactive", False)) and sys.stderr.isatty()
