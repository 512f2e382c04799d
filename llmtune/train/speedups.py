"""Speed and memory switches applied to the model before training: the method's fused
forward (train.fused_forward), CPU dropout masks (train.fast_dropout, models/fast_dropout.py),
train.gradient_checkpointing and train.compile. Each one leaves the computed function
unchanged; `use_speedups` applies those a recipe switches on and says which took effect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from llmtune.models.fast_dropout import use_fast_dropout

if TYPE_CHECKING:
    from llmtune.console import Reporter
    from llmtune.methods.base import Method
    from llmtune.recipe.schema import TrainSection


def use_speedups(model: Any, method: Method, t: TrainSection, device: torch.device, reporter: Reporter) -> dict:
    """Apply the switches `t` turns on to `model` (a TaskModel with the method applied);
    returns what took effect (manifest.json's `speed_features`)."""
    on = {"packing": t.packing, "chunked_loss": bool(model.chunked_loss), "compile": False,
          "gradient_checkpointing": False, "fast_dropout": 0, "fused_forward": 0}
    if t.fused_forward:
        on["fused_forward"] = method.fused_forward(model)
    if t.fast_dropout and device.type == "cpu":
        on["fast_dropout"] = use_fast_dropout(model)
    if t.gradient_checkpointing:
        on["gradient_checkpointing"] = enable_gradient_checkpointing(model.body)
        if not on["gradient_checkpointing"]:
            reporter.warn("train.gradient_checkpointing: this model does not support it; training without")
    if t.compile:
        n = compile_blocks(model.body)
        on["compile"] = True
        reporter.log(f"compile: {n} transformer blocks compiled (the first steps compile them)")
    return on


def pretrained_inside(body: nn.Module):
    """The transformers model inside whatever wraps it (peft, a soft prompt)."""
    for module in body.modules():
        if hasattr(module, "gradient_checkpointing_enable") and hasattr(module, "config"):
            return module
    return None


def enable_gradient_checkpointing(body: nn.Module) -> bool:
    model = pretrained_inside(body)
    if model is None or not getattr(model, "supports_gradient_checkpointing", False):
        return False
    # Non-reentrant: works with frozen embeddings (LoRA) and with DDP, no input hook needed.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return True


def compile_blocks(body: nn.Module) -> int:
    """torch.compile every transformer block in place. Per block, not the whole model: the
    blocks share one compiled graph, the compile is short, and the loss and the loop stay
    eager (whole-model compile measured slower on the GPU anchor, ../shared/STACK.md)."""
    from llmtune.models.layers import transformer_blocks

    blocks = transformer_blocks(body)
    for block in blocks:
        # dynamic: batches are padded to their own length, so sequence lengths vary.
        block.compile(dynamic=True)
    return len(blocks)
