"""llmtune's training loop: one Accelerate loop for every method that does not train itself.

It only steps: the run session around it (session.py) owns the run directory, manifest,
metrics file, signals and final/. Methods plug in through assemble.py; nothing here looks
at a method's name. Habits kept from the first line: batches padded to their own longest
sequence and grouped by length, tokens/s counted on real (non-padding) tokens. Steps count
global batches (data_order.py); one optimizer step (its micro-batches, the loss normalised
by the loss terms of the whole step across micro-batches and processes, the update) is
stepping.py's, which `llmtune preview --time` times too; the NaN/inf check costs one host
sync per step, or none between log steps (nonfinite.py).

Resume is exact: a checkpoint holds the trainable weights, optimizer, schedule, RNG
streams, data position (epoch, batch) and the logging window, and data order is a pure
function of (seed, epoch), so a resumed run replays exactly what the lost part did.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from llmtune.data.cache import tokenizer_fingerprint
from llmtune.data.pipeline import prepare_data
from llmtune.data.prompt_style import describe as describe_rendering
from llmtune.evaluate.supervised import evaluate_examples, headline
from llmtune.methods.job import Outcome
from llmtune.models.chat_template import template_hash
from llmtune.models.chunked_loss import release_workspaces
from llmtune.models.load import load_tokenizer
from llmtune.train import checkpoint as ckpt
from llmtune.train.stepping import OptimizerStep, build_training, training_rows

if TYPE_CHECKING:
    from accelerate import Accelerator

    from llmtune.methods.base import Method
    from llmtune.methods.job import Job


@dataclass
class Position:
    """Where the run is; saved in every checkpoint, so a resume continues from here."""

    epoch: int = 0
    batch: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    skipped: int = 0


@dataclass
class Window:
    """What trained since the last log line (saved in checkpoints with the position)."""

    loss: torch.Tensor
    tokens: int = 0
    steps: int = 0
    started: float = 0.0

    def saved(self) -> dict:
        return {"loss": self.loss.item(), "tokens": self.tokens, "steps": self.steps}


def accelerator_for(precision: str) -> Accelerator:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from llmtune.models.precision import autocast_precision  # the manifest's `precision` record reads it too

    cuda = torch.cuda.is_available()
    precision = autocast_precision(precision)
    # Autocast (bf16/fp16 compute) over the weights as loaded: float32 master weights stay
    # float32 and the optimizer steps them in float32. The DDP handler is filled in once
    # the preflight knows whether some parameters may go unused (train/stepping.py).
    return Accelerator(mixed_precision="no" if precision == "fp32" else precision, cpu=not cuda,
                       kwargs_handlers=[DistributedDataParallelKwargs()])


def fit(job: Job, method: Method) -> Outcome:
    accelerator = accelerator_for(job.recipe.train.precision)
    try:
        return Loop(job, method, accelerator).run()
    finally:
        release_workspaces()
        accelerator.end_training()  # without it, about one multi-process run in three aborts on exit


class Loop:
    """One run's stepping: set up in __init__ (data, model, optimizer; nothing trained yet),
    then `run()` resumes if asked, steps, logs, evaluates and checkpoints."""

    def __init__(self, job: Job, method: Method, accelerator: Accelerator):
        self.job, self.method, self.acc = job, method, accelerator
        self.r, self.t, self.rep = job.recipe, job.recipe.train, job.reporter
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.device = accelerator.device
        torch.manual_seed(self.t.seed)
        self.tok = load_tokenizer(self.r.model.name, self.r.model.trust_remote_code, self.r.model.revision)
        self.data = prepare_data(self.r.data, self.tok)
        self.rep.log(_data_line(self.data, self.r.data.max_length))
        self.rows = training_rows(self.data.train, self.r, self.rep)
        self.training = build_training(self.r, method, self.rows, self.data.labels, self.tok, accelerator, self.rep)
        self.stepper = OptimizerStep(self.training, accelerator, self.rows, self.tok.pad_token_id,
                                     self.t.max_grad_norm)
        if self.world > 1:
            # The same seed on every process would give every process the same dropout masks.
            torch.manual_seed(self.t.seed + 1_000_003 * self.rank)
        self.position = Position()
        self.step = 0
        """Optimizer steps done."""
        self.window = Window(torch.zeros((), device=self.device))
        self.run_start = time.perf_counter()
        self.eval_rows: int | None = None
        """Rows the last evaluation scored."""
        self.eval_seconds: float | None = None
        """How long the final evaluation took."""

    @property
    def unwrapped(self) -> Any:
        return self.acc.unwrap_model(self.training.model)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> Outcome:
        saved = self._resume() if self.job.resume else None
        self.job.begin(self._manifest(), resumed_step=self.step)
        self._open_window(saved or {"loss": 0.0, "tokens": 0, "steps": 0})
        self.run_start = time.perf_counter() - self.position.elapsed
        self.training.model.train()
        stopped = self._train()
        if stopped is not None:
            return stopped
        return self._outcome(time.perf_counter() - self.run_start, self._final_eval())

    def _manifest(self) -> dict:
        tr = self.training
        return {"data_fingerprint": self.data.fingerprint, "data_summary": self.data.summary,
                "tokenizer_hash": tokenizer_fingerprint(self.tok), "chat_template_hash": template_hash(self.tok),
                "trainable_parameters": tr.trainable, "total_parameters": tr.total, "total_steps": tr.total_steps,
                "processes": self.world, "global_batch_size": self.t.batch_size * self.t.grad_accum * self.world,
                "speed_features": {**tr.speed_features, "nonfinite_check": tr.guard.mode},
                "frozen_unreached": tr.unreached}

    def _resume(self) -> dict | None:
        """Restore the newest complete checkpoint; returns its logging window."""
        tr, main = self.training, self.acc.is_main_process
        found = ckpt.load_latest(self.job.checkpoints, self.unwrapped, tr.optimizer, tr.scheduler, self.rep.warn,
                                 rank=self.rank, world=self.world)
        if found is None:
            self.rep.log("no complete checkpoint to resume from; starting from the beginning")
            if main:
                ckpt.discard_after(self.job.checkpoints, 0)
            return None
        path, state = found
        self.position = Position(**{k: state[k] for k in asdict(Position()) if k in state})
        self.step = state["step"]
        self.acc.wait_for_everyone()  # every process has read it before the main one prunes
        if main:
            ckpt.discard_after(self.job.checkpoints, self.step)
        self.rep.log(f"resumed from {path.name} (epoch {self.position.epoch}, batch {self.position.batch})")
        return state.get("window")

    # -- stepping -----------------------------------------------------------------------------
    def _train(self) -> Outcome | None:
        """Optimizer steps until total_steps; an Outcome if a signal or divergence stops it."""
        total = self.training.total_steps
        with self.rep.progress(total, f"train {self.method.name}", completed=self.step) as advance:
            while self.step < total:
                plan = self.training.order.take_step(self.position, self.t.grad_accum)
                for n, idx in enumerate(plan.mine):
                    self._forward_backward(idx, plan.loss_items, last=n == len(plan.mine) - 1)
                self.window.tokens += plan.tokens
                stopped = self._optimizer_step(advance)
                if stopped is not None:
                    return stopped
        return None

    def _forward_backward(self, idx: list[int], step_items: int, last: bool) -> None:
        self.stepper.micro_batch(idx, step_items, last)

    def _optimizer_step(self, advance: Callable[..., None]) -> Outcome | None:
        if not self.stepper.apply(self.step + 1):
            return self._non_finite(self.stepper.norm)
        self.step += 1
        self.window.loss += self.training.guard.good_part(self.stepper.take_loss())
        self.window.steps += 1
        advance(1)
        return self._after_step()

    def _after_step(self) -> Outcome | None:
        """Logging, evaluation, checkpoint and a stop request, as the step just taken asks."""
        t, total = self.t, self.training.total_steps
        log = self.step % t.log_every == 0 or self.step == total
        evaluate = bool(t.eval_every and self.step % t.eval_every == 0 and self.step != total and self.data.eval)
        signum = self.job.stop_requested()
        save = bool(t.save_every and self.step % t.save_every == 0) or bool(signum)
        if self.training.guard.mode == "log_steps" and (log or evaluate or save):
            stopped = self._deferred_non_finite()
            if stopped is not None:
                return stopped
        if log:
            self._log_window()
        if evaluate:
            self._evaluate()
        self.position.elapsed = time.perf_counter() - self.run_start
        if save:
            self._checkpoint()
        if signum:
            return self._outcome(self.position.elapsed, {}, stopped_by=signum)
        return None

    def _non_finite(self, norm: torch.Tensor | None) -> Outcome | None:
        """every_step: the bad step was not applied; it is redone with the next batches."""
        loss = self.stepper.loss
        what = f"loss {loss.item()}" if not torch.isfinite(loss) else f"gradient norm {norm.item() if norm is not None else None}"
        self.stepper.discard()
        self.position.skipped += 1
        return self._diverge_or_skip(what, self.step + 1, 1)

    def _deferred_non_finite(self) -> Outcome | None:
        """log_steps: bad steps since the last check were skipped on the device; count them now."""
        found = self.training.guard.collect()
        if found is None:
            return None
        count, first = found
        self.position.skipped += count
        return self._diverge_or_skip(f"loss or gradient at step {first}" if count == 1 else
                                     f"loss or gradient at {count} steps from step {first}", first, count,
                                     counted=True)

    def _diverge_or_skip(self, what: str, step: int, count: int, counted: bool = False) -> Outcome | None:
        t = self.t
        skipped = self.position.skipped
        if t.on_nonfinite_loss == "skip" and skipped <= t.max_skipped_steps:
            where = "" if counted else f" at step {step}"
            made_up = ", and it counts as a step" if counted else ""
            self.rep.warn(f"non-finite {what}{where}; step skipped, weights unchanged{made_up} "
                          f"({skipped} of at most {t.max_skipped_steps} skipped)")
            return None
        why = (f"more than train.max_skipped_steps ({t.max_skipped_steps}) steps were skipped"
               if t.on_nonfinite_loss == "skip" else "train.on_nonfinite_loss is stop")
        where = "" if counted else f" at step {step}"
        diverged = (f"non-finite {what}{where}; stopped because {why}. The weights were not updated "
                    f"with it. Lower train.lr, keep train.max_grad_norm set, check the data, or set "
                    f"train.on_nonfinite_loss: skip.")
        return self._outcome(time.perf_counter() - self.run_start, {}, diverged=diverged)

    # -- the logging window, checkpoints, evaluation ---------------------------------------
    def _open_window(self, saved: dict) -> None:
        self.window = Window(torch.tensor(saved["loss"], device=self.device), int(saved["tokens"]), saved["steps"],
                             time.perf_counter())

    def _log_window(self) -> None:
        # Every rank reaches this step together. Each rank's loss is its share of the
        # token-weighted mean (its loss sum over the step's loss terms on every rank), so
        # the sum over ranks is the loss of the whole step. Tokens are counted on the host.
        now, w = time.perf_counter(), self.window
        loss = self.acc.reduce(w.loss.clone(), "sum") if self.world > 1 else w.loss
        self.position.tokens += w.tokens
        steps = self.training.guard.good_steps(w.steps)
        record = {"step": self.step, "epoch": self.training.order.progress(self.position),
                  "loss": loss.item() / max(steps, 1), "lr": self.training.scheduler.get_last_lr()[0],
                  "tokens_per_s": w.tokens / max(now - w.started, 1e-9), "tokens": w.tokens}
        self.job.log(record)
        self.rep.log(f"step {self.step}/{self.training.total_steps} loss {record['loss']:.4f} "
                     f"lr {record['lr']:.2e} {record['tokens_per_s']:.0f} tok/s")
        self._open_window({"loss": 0.0, "tokens": 0, "steps": 0})

    def _checkpoint(self) -> None:
        from accelerate.utils import gather_object

        # Every process's own random streams: each draws its own dropout masks.
        rng = gather_object([ckpt.rng_state()]) if self.world > 1 else None
        if self.acc.is_main_process:
            tr = self.training
            ckpt.save_checkpoint(self.job.checkpoints, self.step, self.unwrapped, tr.optimizer, tr.scheduler,
                                 {**asdict(self.position), "window": self.window.saved()}, self.t.keep_checkpoints,
                                 rng_states=rng)
        self.acc.wait_for_everyone()

    def _evaluate(self) -> dict:
        e = self.r.eval
        examples = self.data.eval[: e.limit] if e.limit else self.data.eval
        pad = getattr(self.unwrapped.body.config, "pad_token_id", None)  # not every config defines one
        metrics = evaluate_examples(self.unwrapped, examples, batch_size=e.batch_size, pad_id=0 if pad is None else pad,
                                    labels=self.data.labels, device=self.device)
        self.job.log({"step": self.step, **{f"eval_{k}": v for k, v in headline(metrics).items()}})
        self.rep.log(f"eval at step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in headline(metrics).items()
                                                               if isinstance(v, float)))
        self.eval_rows = len(examples)
        return metrics

    def _final_eval(self) -> dict:
        started = time.perf_counter()
        metrics = self._evaluate() if self.data.eval else {}
        self.eval_seconds = time.perf_counter() - started if metrics else None
        return metrics

    def _outcome(self, train_seconds: float, final_eval: dict, **ending: Any) -> Outcome:
        last = ckpt.complete_checkpoints(self.job.checkpoints)
        tr = self.training
        return Outcome(
            steps=self.step, trainable_parameters=tr.trainable, total_parameters=tr.total,
            tokenizer=self.tok, model=self.unwrapped, eval=final_eval, eval_rows=self.eval_rows,
            info={"labels": self.data.labels},
            manifest={"skipped_steps": self.position.skipped, "eval_seconds": self.eval_seconds},
            train_tokens=self.position.tokens, train_seconds=train_seconds,
            last_checkpoint=last[-1] if last else None, **ending)


def _data_line(data: Any, max_length: int) -> str:
    s = data.summary
    line = f"data: {len(data.train)} train / {len(data.eval)} eval examples"
    if s.get("truncated"):
        line += f"; {s['truncated']} truncated to {max_length} tokens"
    if s.get("dropped_empty"):
        line += f"; {s['dropped_empty']} rows with empty text dropped (data.empty_rows: drop)"
    if s.get("dropped_truncated"):
        line += (f"; {s['dropped_truncated']} rows dropped because truncation cut off everything "
                 f"the loss trains on (raise data.max_length to keep them)")
    if rendering := describe_rendering(s):
        line += f"; {rendering}"
    return line
