"""One optimizer step of llmtune's loop, and what it steps. `build_training` makes the model,
optimizer, schedule, data order and non-finite guard once per run (checks before the first
step in preflight.py, speed switches in speedups.py); `OptimizerStep` runs a step's
micro-batches and the update. The loop (loop.py) runs it step after step; `llmtune preview
--time` times the very same step, speed switches included.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from llmtune.data.arrow_store import lengths_of, loss_items_of
from llmtune.data.batching import collate
from llmtune.data.packing import pack_examples
from llmtune.errors import UserError
from llmtune.train.assemble import build_for_training
from llmtune.train.data_order import DataOrder
from llmtune.train.nonfinite import FiniteGuard
from llmtune.train.optim import build_optimizer, build_scheduler
from llmtune.train.preflight import run_preflight
from llmtune.train.speedups import use_speedups

if TYPE_CHECKING:
    from accelerate import Accelerator

    from llmtune.console import Reporter
    from llmtune.methods.base import Method
    from llmtune.recipe.schema import RecipeBase


@dataclass
class Training:
    """What a run steps, built once (`build_training`)."""

    model: Any
    """The TaskModel with the method applied, as accelerate prepared it."""
    optimizer: Any
    scheduler: Any
    guard: FiniteGuard
    order: DataOrder
    total_steps: int
    speed_features: dict[str, Any]
    """Which speed switches took effect (manifest.json's `speed_features`)."""
    trainable: int
    total: int
    unreached: list[str]
    """Trainable parameters no loss reaches (frozen, and named in the manifest)."""


def build_training(recipe: RecipeBase, method: Method, rows: Any, labels: list[str] | None, tok: Any,
                   accelerator: Accelerator, reporter: Reporter) -> Training:
    """The model, optimizer, schedule, data order and guard for stepping `rows` (encoded
    examples, padded with `tok`'s pad token)."""
    t = recipe.train
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    model = build_for_training(recipe, method, labels, tok=tok, reporter=reporter).to(accelerator.device)
    model.loss_reduction = "sum"  # normalised by the loss terms of the whole step (OptimizerStep)
    model.chunked_loss = t.chunked_loss and model.is_causal
    unreached = _preflight(model, method, rows, pad_id, accelerator, recipe, reporter)
    features = use_speedups(model, method, t, accelerator.device, reporter)
    trainable, total = model.trainable_parameters()
    order = DataOrder(lengths_of(rows), loss_items_of(rows), batch_size=t.batch_size, seed=t.seed,
                      group_by_length=t.group_by_length, world=accelerator.num_processes,
                      rank=accelerator.process_index)
    total_steps = t.max_steps or order.total_steps(t.epochs, t.grad_accum)
    optimizer = build_optimizer(model, t.lr, t.weight_decay)
    scheduler = build_scheduler(optimizer, t.scheduler, total_steps, int(t.warmup_ratio * total_steps))
    guard = FiniteGuard(_check_mode(t.nonfinite_check, accelerator.device, optimizer), accelerator.device)
    model, optimizer = accelerator.prepare(model, optimizer)
    return Training(model, optimizer, scheduler, guard, order, total_steps, features, trainable, total, unreached)


def training_rows(examples: Any, recipe: RecipeBase, reporter: Reporter) -> Any:
    """The rows the loop steps over: the encoded examples, or with train.packing, several
    examples packed into each row of up to data.max_length tokens."""
    if not recipe.train.packing:
        return examples
    max_length = recipe.data.max_length
    packed = pack_examples(examples, max_length)
    tokens = sum(len(e["input_ids"]) for e in packed)
    reporter.log(f"packing: {len(examples)} examples in {len(packed)} rows of up to "
                 f"{max_length} tokens ({100 * tokens / (len(packed) * max_length):.0f}% full)")
    return packed


def _preflight(model: Any, method: Method, rows: Any, pad_id: int, accelerator: Accelerator,
               recipe: RecipeBase, reporter: Reporter) -> list[str]:
    t = recipe.train
    if t.packing and method.virtual_tokens_at == "input":
        raise UserError(f"train.packing: method {method.name!r} puts virtual tokens in front of each row, "
                        f"which packed rows cannot hold; set train.packing: false")
    autocast = accelerator.autocast if accelerator.mixed_precision != "no" else nullcontext
    check = run_preflight(model, rows, pad_id, accelerator.device, autocast, packing=t.packing)
    if check.frozen:
        reporter.log(f"frozen {len(check.frozen)} parameter tensor(s) no loss reaches "
                     f"({_names(check.frozen)}): they cannot train")
    if check.maybe_unused:
        accelerator.ddp_handler.find_unused_parameters = True
        if accelerator.num_processes > 1:
            reporter.log(f"{len(check.maybe_unused)} block parameter tensor(s) got no gradient on the first "
                         f"batch ({_names(check.maybe_unused)}): DDP looks for unused parameters every step")
    if not check.chunked_loss_ok:
        reporter.warn("train.chunked_loss: the chunked loss disagrees with this model's own logits "
                      "(it post-processes them); using the full-logits loss")
        model.chunked_loss = False
    return check.frozen


def _check_mode(mode: str, device: torch.device, optimizer: Any) -> str:
    if mode == "auto":
        mode = "log_steps" if device.type == "cuda" else "every_step"
    if mode == "log_steps" and not optimizer.defaults.get("fused"):
        mode = "every_step"  # only the fused optimizer can skip a step without the host
    return mode


def _names(names: list[str], shown: int = 3) -> str:
    more = f", and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


class OptimizerStep:
    """A step's micro-batches (forward and backward) and its update."""

    def __init__(self, training: Training, accelerator: Accelerator, rows: Any, pad_id: int,
                 max_grad_norm: float | None):
        self.training, self.acc, self.rows, self.pad_id = training, accelerator, rows, pad_id
        self.max_grad_norm = max_grad_norm
        self.world = accelerator.num_processes
        self.loss = torch.zeros((), device=accelerator.device)
        """This step's loss so far, token-weighted over the whole step (all micro-batches, all processes)."""
        self.norm: torch.Tensor | None = None
        """The last step's gradient norm before clipping (None when train.max_grad_norm is off)."""

    def micro_batch(self, idx: list[int], step_items: int, last: bool) -> None:
        """One micro-batch. Its summed loss is divided by the loss terms of the whole step on
        every process (times the process count, which DDP's mean divides out again): token
        weighting across micro-batches and processes, as if the step were one big batch."""
        model = self.training.model
        batch = collate([self.rows[i] for i in idx], self.pad_id)
        batch = {k: v.to(self.acc.device, non_blocking=True) for k, v in batch.items()}
        sync = nullcontext() if last or self.world == 1 else self.acc.no_sync(model)
        denominator = max(step_items, 1)
        with sync, self.acc.autocast():
            if "position_ids" in batch:  # packed: the position ids carry the document mask
                loss, _ = model(batch["input_ids"], None, batch["labels"], batch["position_ids"])
            else:
                loss, _ = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
            self.acc.backward(loss * (self.world / denominator))
        self.loss += loss.detach().float() / denominator

    def apply(self, step: int) -> bool:
        """Clip the gradient (train.max_grad_norm), check for NaN/inf, update: the end of
        optimizer step `step` (counted from 1). False when the every-step check found the
        step non-finite: nothing was applied, and the caller `discard`s it. Under `log_steps`
        a bad step is skipped on the device and counted later (nonfinite.py)."""
        tr = self.training
        self.norm = self.acc.clip_grad_norm_(tr.model.parameters(), self.max_grad_norm) if self.max_grad_norm \
            else None
        if tr.guard.mode == "every_step":
            # One host sync per optimizer step: a NaN/inf must never reach the weights.
            if not tr.guard.finite_now(self.loss, self.norm):
                return False
        else:
            tr.guard.mark(self.loss, self.norm, tr.optimizer, step,
                          [p for p in tr.model.parameters() if p.grad is not None])
        tr.optimizer.step()
        tr.scheduler.step()
        tr.optimizer.zero_grad(set_to_none=True)
        return True

    def discard(self) -> None:
        """Drop the step's gradients and loss (a non-finite step, redone with the next batches)."""
        self.training.optimizer.zero_grad(set_to_none=True)
        self.loss = torch.zeros((), device=self.acc.device)

    def take_loss(self) -> torch.Tensor:
        """The finished step's loss; the next step starts from zero."""
        loss, self.loss = self.loss, torch.zeros((), device=self.acc.device)
        return loss
