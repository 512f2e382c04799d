"""A trl trainer inside an llmtune run: the recipe's train section mapped onto trl's config, and
a callback that feeds the run's metrics, progress bar and stop requests.

Imported only inside fit/evaluate (it imports torch, transformers, trl and datasets)."""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import TrainerCallback

from llmtune.errors import UserError

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
    from llmtune.models.precision import autocast_precision

    cuda = torch.cuda.is_available()
    precision = autocast_precision(precision)
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

    def __init__(self, job):
        self.job = job
        self.rep = job.reporter
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
        if self.job.stop_requested():
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
        self.job.log(record)
        prefix = "eval_" if any(k.startswith("eval_") for k in record) else ""
        shown = [(k, record[prefix + k]) for k in _HEADLINE if prefix + k in record]
        self.rep.log(f"{'eval at ' if prefix else ''}step {state.global_step}/{state.max_steps} " +
                     " ".join(f"{k} {v:.4g}" for k, v in shown))
        loss = logs.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            self.diverged = (state.global_step, loss)
            control.should_training_stop = True

    @property
    def tokens(self) -> int | None:
        """Tokens trl counted (`num_tokens`, padding excluded where trl excludes it)."""
        return int(self._tokens) if self._tokens is not None else None


def last_checkpoint(folder: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*")
             if (m := _CHECKPOINT.match(p.name)) and (p / "trainer_state.json").exists()]
    return max(found)[1] if found else None


def clean_eval(metrics: dict) -> dict:
    """trl's eval dict without the `eval_` prefix and the timing bookkeeping."""
    out = {}
    for key, value in metrics.items():
        key = key[len("eval_"):] if key.startswith("eval_") else key
        if key in _EVAL_BOOKKEEPING or not isinstance(value, (int, float)):
            continue
        out[key] = value
    return out
