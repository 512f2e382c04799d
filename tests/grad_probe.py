"""The gradient of a run's first optimizer step, computed by the loop's own code (set-up,
data order, micro-batches, loss normalisation, DDP), for tests that compare gradients
across batch layouts: in-process for one process, under torchrun for several."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch


def first_step_gradients(recipe_dict: dict) -> dict[str, torch.Tensor]:
    from llmtune.console import Reporter
    from llmtune.methods.registry import method_for
    from llmtune.recipe import recipe_from_dict
    from llmtune.train.loop import Loop, accelerator_for

    recipe = recipe_from_dict(recipe_dict).recipe
    acc = accelerator_for("fp32")
    job = SimpleNamespace(recipe=recipe, reporter=Reporter(quiet=True), resume=False,
                          checkpoints=Path(tempfile.mkdtemp()) / "checkpoints")
    loop = Loop(job, method_for(recipe.method), acc)  # set up: data, model, optimizer; nothing trained
    plan = loop.training.order.take_step(loop.position, recipe.train.grad_accum)
    for n, idx in enumerate(plan.mine):
        loop.stepper.micro_batch(idx, plan.loss_items, last=n == len(plan.mine) - 1)
    return {name: p.grad.detach().clone() for name, p in loop.unwrapped.named_parameters() if p.grad is not None}
