"""Speed and memory switches applied to the model before training (train.compile,
train.gradient_checkpointing). Each one leaves the computed function unchanged."""

from __future__ import annotations

from torch import nn


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
