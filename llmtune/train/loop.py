"""llmtune's training loop: one Accelerate loop for every method that does not train itself.

It only steps: the run session around it (session.py) owns the run directory, manifest,
metrics file, signals and final/. Methods plug in through assemble.py; nothing here looks
at a method's name. Habits kept from the first line: batches padded to their own longest
sequence and grouped by length, tokens/s counted on real (non-padding) tokens. Steps count
global batches (data_order.py); the loss is normalised by the loss terms of the whole
optimizer step across micro-batches and processes; the NaN/inf check costs one host sync
per step, or none between log steps (nonfinite.py); speed switches in speedups.py, checks
before the first step in preflight.py.

Resume is exact: a checkpoint holds the trainable weights, optimizer, schedule, RNG
streams, data position (epoch, batch) and the logging window, and data order is a pure
function of (seed, epoch), so a resumed run replays exactly what the lost part did.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch

from llmtune.data.arrow_store import lengths_of, loss_items_of
from llmtune.data.batching import collate
from llmtune.data.cache import tokenizer_fingerprint
from llmtune.data.packing import pack_examples
from llmtune.data.pipeline import prepare_data
from llmtune.data.prompt_style import describe as describe_rendering
from llmtune.errors import UserError
from llmtune.evaluate.supervised import evaluate_examples, headline
from llmtune.methods.job import Outcome
from llmtune.models.chunked_loss import release_workspaces
from llmtune.models.fast_dropout import use_fast_dropout
from llmtune.models.chat_template import template_hash
from llmtune.models.load import load_tokenizer
from llmtune.train import checkpoint as ckpt
from llmtune.train.assemble import build_for_training
from llmtune.train.data_order import DataOrder
from llmtune.train.nonfinite import FiniteGuard
from llmtune.train.optim import build_optimizer, build_scheduler
from llmtune.train.preflight import run_preflight
from llmtune.train.speedups import compile_blocks, enable_gradient_checkpointing

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
    from accelerate.utils import DistributedDataParallelKwargs

    from llmtune.models.precision import autocast_precision  # the manifest's `precision` record reads it too

    cuda = torch.cuda.is_available()
    precision = autocast_precision(precision)
    # Autocast (bf16/fp16 compute) over the weights as loaded: float32 master weights stay
    # float32 and the optimizer steps them in float32. The DDP handler is filled in once
    # the preflight knows whether some parameters may go unused (train/preflight.py).
    return Accelerator(mixed_precision="no" if precision == "fp32" else precision, cpu=not cuda,
                       kwargs_handlers=[DistributedDataParallelKwargs()])


def fit(job, method) -> Outcome:
    accelerator = accelerator_for(job.recipe.train.precision)
    try:
        return Loop(job, method, accelerator).run()
    finally:
        release_workspaces()
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
        self.rows = self._training_rows()
        model = build_for_training(r, self.method, self.data.labels, tok=self.tok, reporter=self.rep)
        model = model.to(self.device)
        model.loss_reduction = "sum"  # normalised by the loss terms of the whole step, below
        model.chunked_loss = t.chunked_loss and model.is_causal
        self._preflight(model)
        self.features = self._speedups(model)
        self.trainable, self.total = model.trainable_parameters()
        self.order = DataOrder(lengths_of(self.rows), loss_items_of(self.rows),
                               batch_size=t.batch_size, seed=t.seed, group_by_length=t.group_by_length,
                               world=self.world, rank=self.rank)
        self.total_steps = t.max_steps or self.order.total_steps(t.epochs, t.grad_accum)
        optimizer = build_optimizer(model, t.lr, t.weight_decay)
        self.scheduler = build_scheduler(optimizer, t.scheduler, self.total_steps, int(t.warmup_ratio * self.total_steps))
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        self.guard = FiniteGuard(self._check_mode(optimizer), self.device)
        if self.world > 1:
            # The same seed on every process would give every process the same dropout masks.
            torch.manual_seed(t.seed + 1_000_003 * self.rank)

    def _training_rows(self) -> list[dict]:
        if not self.t.packing:
            return self.data.train
        packed = pack_examples(self.data.train, self.r.data.max_length)
        tokens = sum(len(e["input_ids"]) for e in packed)
        self.rep.log(f"packing: {len(self.data.train)} examples in {len(packed)} rows of up to "
                     f"{self.r.data.max_length} tokens ({100 * tokens / (len(packed) * self.r.data.max_length):.0f}% full)")
        return packed

    def _preflight(self, model) -> None:
        if self.t.packing and self.method.virtual_tokens_at == "input":
            raise UserError(f"train.packing: method {self.method.name!r} puts virtual tokens in front of each row, "
                            f"which packed rows cannot hold; set train.packing: false")
        pad = self.tok.pad_token_id
        autocast = self.acc.autocast if self.acc.mixed_precision != "no" else nullcontext
        check = run_preflight(model, self.rows, pad, self.device, autocast, packing=self.t.packing)
        if check.frozen:
            self.rep.log(f"frozen {len(check.frozen)} parameter tensor(s) no loss reaches "
                         f"({_names(check.frozen)}): they cannot train")
        if check.maybe_unused:
            self.acc.ddp_handler.find_unused_parameters = True
            if self.world > 1:
                self.rep.log(f"{len(check.maybe_unused)} block parameter tensor(s) got no gradient on the first "
                             f"batch ({_names(check.maybe_unused)}): DDP looks for unused parameters every step")
        if not check.chunked_loss_ok:
            self.rep.warn("train.chunked_loss: the chunked loss disagrees with this model's own logits "
                          "(it post-processes them); using the full-logits loss")
            model.chunked_loss = False
        self.unreached = check.frozen

    def _speedups(self, model) -> dict:
        t = self.t
        on = {"packing": t.packing, "chunked_loss": bool(model.chunked_loss), "compile": False,
              "gradient_checkpointing": False, "fast_dropout": 0, "fused_forward": 0}
        if t.fused_forward:
            on["fused_forward"] = self.method.fused_forward(model)
        if t.fast_dropout and self.device.type == "cpu":
            on["fast_dropout"] = use_fast_dropout(model)
        if t.gradient_checkpointing:
            on["gradient_checkpointing"] = enable_gradient_checkpointing(model.body)
            if not on["gradient_checkpointing"]:
                self.rep.warn("train.gradient_checkpointing: this model does not support it; training without")
        if t.compile:
            n = compile_blocks(model.body)
            on["compile"] = True
            self.rep.log(f"compile: {n} transformer blocks compiled (the first steps compile them)")
        return on

    def _check_mode(self, optimizer) -> str:
        mode = self.t.nonfinite_check
        if mode == "auto":
            mode = "log_steps" if self.device.type == "cuda" else "every_step"
        if mode == "log_steps" and not optimizer.defaults.get("fused"):
            mode = "every_step"  # only the fused optimizer can skip a step without the host
        return mode

    def _manifest(self) -> dict:
        return {"data_fingerprint": self.data.fingerprint, "data_summary": self.data.summary,
                "tokenizer_hash": tokenizer_fingerprint(self.tok), "chat_template_hash": template_hash(self.tok),
                "trainable_parameters": self.trainable,
                "total_parameters": self.total, "total_steps": self.total_steps, "processes": self.world,
                "global_batch_size": self.t.batch_size * self.t.grad_accum * self.world,
                "speed_features": {**self.features, "nonfinite_check": self.guard.mode},
                "frozen_unreached": self.unreached}

    def _resume(self) -> dict | None:
        """Restore the newest complete checkpoint; returns its logging window."""
        main = self.acc.is_main_process
        found = ckpt.load_latest(self.checkpoints, self.unwrapped, self.optimizer, self.scheduler, self.rep.warn,
                                 rank=self.rank, world=self.world)
        if found is None:
            self.rep.log("no complete checkpoint to resume from; starting from the beginning")
            if main:
                ckpt.discard_after(self.checkpoints, 0)
            return None
        path, state = found
        self.position = Position(**{k: state[k] for k in asdict(Position()) if k in state})
        self.step = state["step"]
        self.acc.wait_for_everyone()  # every process has read it before the main one prunes
        if main:
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
        self.step_loss = torch.zeros((), device=self.device)
        self.hold_at = _hold_step()
        with self.rep.progress(self.total_steps, f"train {self.method.name}", completed=self.step) as advance:
            while self.step < self.total_steps:
                plan = self.order.take_step(self.position, self.t.grad_accum)
                for n, idx in enumerate(plan.mine):
                    self._forward_backward(idx, plan.loss_items, last=n == len(plan.mine) - 1)
                self.window_tokens += plan.tokens
                stopped = self._optimizer_step(advance)
                if stopped is not None:
                    return stopped
        return None

    def _forward_backward(self, idx: list[int], step_items: int, last: bool) -> None:
        """One micro-batch. Its summed loss is divided by the loss terms of the whole step on
        every process (times the process count, which DDP's mean divides out again): token
        weighting across micro-batches and processes, as if the step were one big batch."""
        batch = collate([self.rows[i] for i in idx], self.tok.pad_token_id)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        sync = nullcontext() if last or self.world == 1 else self.acc.no_sync(self.model)
        denominator = max(step_items, 1)
        with sync, self.acc.autocast():
            if "position_ids" in batch:  # packed: the position ids carry the document mask
                loss, _ = self.model(batch["input_ids"], None, batch["labels"], batch["position_ids"])
            else:
                loss, _ = self.model(batch["input_ids"], batch["attention_mask"], batch["labels"])
            self.acc.backward(loss * (self.world / denominator))
        self.step_loss += loss.detach().float() / denominator
        if self.hold_at is not None and self.step == self.hold_at:
            self._hold()

    def _optimizer_step(self, advance) -> Outcome | None:
        t = self.t
        norm = self.acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm) if t.max_grad_norm else None
        if self.guard.mode == "every_step":
            # One host sync per optimizer step: a NaN/inf must never reach the weights.
            if not self.guard.finite_now(self.step_loss, norm):
                return self._non_finite(norm)
        else:
            self.guard.mark(self.step_loss, norm, self.optimizer, self.step + 1, self._params())
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.window_loss += self.guard.good_part(self.step_loss)
        self.window_micro += 1
        self.step_loss = torch.zeros((), device=self.device)
        advance(1)
        log = self.step % t.log_every == 0 or self.step == self.total_steps
        evaluate = bool(t.eval_every and self.step % t.eval_every == 0 and self.step != self.total_steps
                         and self.data.eval)
        signum = self.job.stop_requested()
        save = bool(t.save_every and self.step % t.save_every == 0) or bool(signum)
        if self.guard.mode == "log_steps" and (log or evaluate or save):
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

    def _params(self):
        return [p for p in self.model.parameters() if p.grad is not None]

    def _non_finite(self, norm) -> Outcome | None:
        """every_step: the bad step was not applied; it is redone with the next batches."""
        self.optimizer.zero_grad(set_to_none=True)
        self.position.skipped += 1
        loss = self.step_loss
        what = f"loss {loss.item()}" if not torch.isfinite(loss) else f"gradient norm {norm.item()}"
        self.step_loss.zero_()
        return self._diverge_or_skip(what, self.step + 1, 1)

    def _deferred_non_finite(self) -> Outcome | None:
        """log_steps: bad steps since the last check were skipped on the device; count them now."""
        found = self.guard.collect()
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
        self.window_loss = torch.tensor(saved["loss"], device=self.device)
        self.window_tokens = int(saved["tokens"])
        self.window_micro = saved["steps"]
        self.window_start = time.perf_counter()

    def _log_window(self) -> None:
        # Every rank reaches this step together. Each rank's loss is its share of the
        # token-weighted mean (its loss sum over the step's loss terms on every rank), so
        # the sum over ranks is the loss of the whole step. Tokens are counted on the host.
        now = time.perf_counter()
        loss = self.acc.reduce(self.window_loss.clone(), "sum") if self.world > 1 else self.window_loss
        tokens = self.window_tokens
        self.position.tokens += tokens
        steps = self.guard.good_steps(self.window_micro)
        record = {"step": self.step, "epoch": self.order.progress(self.position),
                  "loss": loss.item() / max(steps, 1), "lr": self.scheduler.get_last_lr()[0],
                  "tokens_per_s": tokens / max(now - self.window_start, 1e-9), "tokens": tokens}
        self.job.log(record)
        self.rep.log(f"step {self.step}/{self.total_steps} loss {record['loss']:.4f} lr {record['lr']:.2e} "
                     f"{record['tokens_per_s']:.0f} tok/s")
        self.window_loss.zero_()
        self.window_tokens = 0
        self.window_micro = 0
        self.window_start = time.perf_counter()

    def _checkpoint(self) -> None:
        from accelerate.utils import gather_object

        # Every process's own random streams: each draws its own dropout masks.
        rng = gather_object([ckpt.rng_state()]) if self.world > 1 else None
        if self.acc.is_main_process:
            window = {"loss": self.window_loss.item(), "tokens": self.window_tokens, "steps": self.window_micro}
            ckpt.save_checkpoint(self.checkpoints, self.step, self.unwrapped, self.optimizer, self.scheduler,
                                 {**asdict(self.position), "window": window}, self.t.keep_checkpoints,
                                 rng_states=rng)
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


def _names(names: list[str], shown: int = 3) -> str:
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


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
