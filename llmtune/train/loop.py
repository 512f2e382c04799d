"""llmtune's training loop: one Accelerate loop for every method that does not train itself.

It only steps: the run session around it (session.py) owns the run directory, manifest,
metrics file, signals and final/. Methods plug in through assemble.py; nothing here looks
at a method's name. Habits kept from the first line: batches padded to their own longest
sequence and grouped by length, no host sync in the step except the one finite check per
optimizer step, tokens/s counted on real (non-padding) tokens.

Resume is exact: a checkpoint holds the trainable weights, optimizer, schedule, RNG
streams, data position (epoch, batch) and the logging window, and data order is a pure
function of (seed, epoch), so a resumed run replays exactly what the lost part did.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch

from llmtune.data.batching import collate, epoch_batches
from llmtune.data.cache import tokenizer_fingerprint
from llmtune.data.pipeline import prepare_data
from llmtune.data.prompt_style import describe as describe_rendering
from llmtune.evaluate.supervised import evaluate_examples, headline
from llmtune.methods.base import Outcome
from llmtune.models.chat_template import template_hash
from llmtune.models.load import load_tokenizer
from llmtune.train import checkpoint as ckpt
from llmtune.train.assemble import build_for_training
from llmtune.train.optim import build_optimizer, build_scheduler

HOLD_ENV = "LLMTUNE_HOLD_AT_STEP"
"""Testing aid: after optimizer step N, run one more forward/backward (so the process sits
mid gradient accumulation), then wait for a signal. Tests SIGKILL or SIGTERM the process
there, at a step they choose, instead of racing a timer."""


@dataclass
class Position:
    """Where the run is; saved in every checkpoint, so a resume continues from here."""

    epoch: int = 0
    batch: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    skipped: int = 0


def accelerator_for(precision: str):
    from accelerate import Accelerator

    from llmtune.models.precision import autocast_precision  # the manifest's `precision` record reads it too

    cuda = torch.cuda.is_available()
    precision = autocast_precision(precision)
    return Accelerator(mixed_precision="no" if precision == "fp32" else precision, cpu=not cuda)


def fit(job, method) -> Outcome:
    accelerator = accelerator_for(job.recipe.train.precision)
    try:
        return Loop(job, method, accelerator).run()
    finally:
        accelerator.end_training()  # without it, about one multi-process run in three aborts on exit


class Loop:
    def __init__(self, job, method, accelerator):
        self.job, self.method, self.acc = job, method, accelerator
        self.r, self.t, self.rep = job.recipe, job.recipe.train, job.reporter
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.device = accelerator.device
        self.position = Position()
        self.step = 0

    # -- set-up -----------------------------------------------------------------------------
    def run(self) -> Outcome:
        self._set_up()
        window = ckpt_window = {"loss": 0.0, "tokens": 0, "steps": 0}
        if self.job.resume:
            ckpt_window = self._resume() or window
        self.job.begin(self._manifest(), resumed_step=self.step)
        self._open_window(ckpt_window)
        self.run_start = time.perf_counter() - self.position.elapsed
        self.model.train()
        stopped = self._train()
        if stopped is not None:
            return stopped
        return self._outcome(time.perf_counter() - self.run_start, self._final_eval())

    def _set_up(self) -> None:
        r, t = self.r, self.t
        torch.manual_seed(t.seed)
        self.tok = load_tokenizer(r.model.name, r.model.trust_remote_code, r.model.revision)
        self.data = prepare_data(r.data, self.tok)
        self.rep.log(_data_line(self.data, r.data.max_length))
        model = build_for_training(r, self.method, self.data.labels)
        self.trainable, self.total = model.trainable_parameters()
        batches_per_epoch = math.ceil(len(self.data.train) / t.batch_size)
        self.total_steps = t.max_steps or max(1, math.ceil(t.epochs * batches_per_epoch / t.grad_accum))
        optimizer = build_optimizer(model, t.lr, t.weight_decay)
        self.scheduler = build_scheduler(optimizer, t.scheduler, self.total_steps, int(t.warmup_ratio * self.total_steps))
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.lengths = [len(e["input_ids"]) for e in self.data.train]

    def _manifest(self) -> dict:
        return {"data_fingerprint": self.data.fingerprint, "data_summary": self.data.summary,
                "tokenizer_hash": tokenizer_fingerprint(self.tok), "chat_template_hash": template_hash(self.tok),
                "trainable_parameters": self.trainable,
                "total_parameters": self.total, "total_steps": self.total_steps}

    def _resume(self) -> dict | None:
        """Restore the newest complete checkpoint; returns its logging window."""
        found = ckpt.load_latest(self.checkpoints, self.unwrapped, self.optimizer, self.scheduler, self.rep.warn)
        if found is None:
            self.rep.log("no complete checkpoint to resume from; starting from the beginning")
            ckpt.discard_after(self.checkpoints, 0)
            return None
        path, state = found
        self.position = Position(**{k: state[k] for k in asdict(Position()) if k in state})
        self.step = state["step"]
        ckpt.discard_after(self.checkpoints, self.step)
        self.rep.log(f"resumed from {path.name} (epoch {self.position.epoch}, batch {self.position.batch})")
        return state.get("window")

    @property
    def unwrapped(self):
        return self.acc.unwrap_model(self.model)

    @property
    def checkpoints(self):
        return self.job.checkpoints

    # -- stepping -----------------------------------------------------------------------------
    def _train(self) -> Outcome | None:
        """Optimizer steps until total_steps; an Outcome if a signal or divergence stops it."""
        self.micro, self.step_loss = 0, torch.zeros((), device=self.device)
        self.hold_at = _hold_step()
        with self.rep.progress(self.total_steps, f"train {self.method.name}", completed=self.step) as advance:
            while self.step < self.total_steps:
                batches = epoch_batches(self.lengths, self.t.batch_size, self.t.seed, self.position.epoch,
                                        group_by_length=self.t.group_by_length)
                usable = len(batches) - len(batches) % self.world if self.world > 1 else len(batches)
                self.usable = max(usable, 1)
                while self.position.batch < usable and self.step < self.total_steps:
                    idx = batches[self.position.batch + self.rank]
                    self.position.batch += self.world
                    if not self._forward_backward(idx):
                        continue
                    stopped = self._optimizer_step(advance)
                    if stopped is not None:
                        return stopped
                if self.position.batch >= usable:
                    self.position.epoch += 1
                    self.position.batch = 0
        return None

    def _forward_backward(self, idx: list[int]) -> bool:
        """One micro-batch; True when it completes an accumulation window."""
        batch = {k: v.to(self.device) for k, v in collate([self.data.train[i] for i in idx],
                                                           self.tok.pad_token_id).items()}
        self.micro += 1
        last = self.micro == self.t.grad_accum
        sync = nullcontext() if last or self.world == 1 else self.acc.no_sync(self.model)
        with sync, self.acc.autocast():
            loss, _ = self.model(batch["input_ids"], batch["attention_mask"], batch["labels"])
            self.acc.backward(loss / self.t.grad_accum)
        self.step_loss += loss.detach() / self.t.grad_accum
        self.window_tokens += batch["attention_mask"].sum()
        if self.hold_at is not None and self.step == self.hold_at:
            self._hold()
        if last:
            self.micro = 0
        return last

    def _optimizer_step(self, advance) -> Outcome | None:
        t = self.t
        norm = self.acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm) if t.max_grad_norm else None
        # One host sync per optimizer step: a NaN/inf must never reach the weights.
        finite = torch.isfinite(self.step_loss) if norm is None else \
            torch.isfinite(self.step_loss) & torch.isfinite(norm)
        if not bool(finite):
            return self._non_finite(norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.window_loss += self.step_loss
        self.window_micro += 1
        self.step_loss = torch.zeros((), device=self.device)
        advance(1)
        if self.step % t.log_every == 0 or self.step == self.total_steps:
            self._log_window()
        if t.eval_every and self.step % t.eval_every == 0 and self.step != self.total_steps and self.data.eval:
            self._evaluate()
        self.position.elapsed = time.perf_counter() - self.run_start
        signum = self.job.stop_requested()
        if (t.save_every and self.step % t.save_every == 0) or signum:
            self._checkpoint()
        if signum:
            return self._outcome(self.position.elapsed, {}, stopped_by=signum)
        return None

    def _non_finite(self, norm) -> Outcome | None:
        t = self.t
        self.optimizer.zero_grad(set_to_none=True)
        self.position.skipped += 1
        step, skipped = self.step + 1, self.position.skipped
        loss = self.step_loss
        what = f"loss {loss.item()}" if not torch.isfinite(loss) else f"gradient norm {norm.item()}"
        self.step_loss.zero_()
        self.window_tokens.zero_()
        if t.on_nonfinite_loss == "skip" and skipped <= t.max_skipped_steps:
            self.rep.warn(f"non-finite {what} at step {step}; step skipped, weights unchanged "
                          f"({skipped} of at most {t.max_skipped_steps} skipped)")
            return None
        why = (f"more than train.max_skipped_steps ({t.max_skipped_steps}) steps were skipped"
               if t.on_nonfinite_loss == "skip" else "train.on_nonfinite_loss is stop")
        diverged = (f"non-finite {what} at step {step}; stopped because {why}. The weights were not updated "
                    f"with it. Lower train.lr, keep train.max_grad_norm set, check the data, or set "
                    f"train.on_nonfinite_loss: skip.")
        return self._outcome(time.perf_counter() - self.run_start, {}, diverged=diverged)

    # -- the logging window, checkpoints, evaluation ---------------------------------------
    def _open_window(self, saved: dict) -> None:
        self.window_loss = torch.tensor(saved["loss"], device=self.device)
        self.window_tokens = torch.tensor(saved["tokens"], dtype=torch.long, device=self.device)
        self.window_micro = saved["steps"]
        self.window_start = time.perf_counter()

    def _log_window(self) -> None:
        # Every rank reaches this step together: log the mean loss over ranks and the tokens
        # all ranks processed.
        multi = self.world > 1
        now = time.perf_counter()
        loss = self.acc.reduce(self.window_loss.clone(), "mean") if multi else self.window_loss
        tokens = int((self.acc.reduce(self.window_tokens.clone(), "sum") if multi else self.window_tokens).item())
        self.position.tokens += tokens
        record = {"step": self.step, "epoch": self.position.epoch + self.position.batch / self.usable,
                  "loss": loss.item() / max(self.window_micro, 1), "lr": self.scheduler.get_last_lr()[0],
                  "tokens_per_s": tokens / max(now - self.window_start, 1e-9)}
        self.job.log(record)
        self.rep.log(f"step {self.step}/{self.total_steps} loss {record['loss']:.4f} lr {record['lr']:.2e} "
                     f"{record['tokens_per_s']:.0f} tok/s")
        self.window_loss.zero_()
        self.window_tokens.zero_()
        self.window_micro = 0
        self.window_start = time.perf_counter()

    def _checkpoint(self) -> None:
        if self.acc.is_main_process:
            window = {"loss": self.window_loss.item(), "tokens": int(self.window_tokens.item()),
                      "steps": self.window_micro}
            ckpt.save_checkpoint(self.checkpoints, self.step, self.unwrapped, self.optimizer, self.scheduler,
                                 {**asdict(self.position), "window": window}, self.t.keep_checkpoints)
        self.acc.wait_for_everyone()

    def _evaluate(self) -> dict:
        e = self.r.eval
        examples = self.data.eval[: e.limit] if e.limit else self.data.eval
        body = self.unwrapped.body
        pad = getattr(body.config, "pad_token_id", None)
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

    def _outcome(self, train_seconds: float, final_eval: dict, **ending) -> Outcome:
        last = ckpt.complete_checkpoints(self.checkpoints)
        return Outcome(
            steps=self.step, trainable_parameters=self.trainable, total_parameters=self.total,
            tokenizer=self.tok, model=self.unwrapped, eval=final_eval, eval_rows=getattr(self, "eval_rows", None),
            info={"labels": self.data.labels},
            manifest={"skipped_steps": self.position.skipped, "eval_seconds": getattr(self, "eval_seconds", None)},
            train_tokens=self.position.tokens, train_seconds=train_seconds,
            last_checkpoint=last[-1] if last else None, **ending)

    def _hold(self) -> None:
        self.rep.log(f"{HOLD_ENV}: holding after step {self.step} (mid-accumulation) until a signal arrives")
        while self.job.stop_requested() is None:
            time.sleep(0.02)
        self.hold_at = None


def _data_line(data, max_length: int) -> str:
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


def _hold_step() -> int | None:
    value = os.environ.get(HOLD_ENV)
    return int(value) if value and value.isdigit() else None
