"""Find the stack of transformer blocks in a model, whatever the architecture calls it."""

from __future__ import annotations

from torch import nn


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The longest ModuleList of blocks (BERT `encoder.layer`, Llama `layers`, GPT-2 `h`)."""
    best: nn.ModuleList | None = None
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise ValueError(f"no transformer blocks found in {type(model).__name__}")
    return best
