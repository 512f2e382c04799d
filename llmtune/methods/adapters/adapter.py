"""Bottleneck adapters with Houlsby or Pfeiffer placement (the torch modules live in _layers.py).

AdapterHub's `adapters` package pins transformers 4.x, so llmtune carries its own small
implementation. The body is frozen; the adapters (and a classification head) train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from llmtune.methods.base import Method, MethodConfig, freeze
from llmtune.methods.registry import register_method


class AdapterConfig(MethodConfig):
    name: Literal["adapter"]
    placement: Literal["houlsby", "pfeiffer"] = "houlsby"
    """`houlsby`: an adapter after the attention output and one after the feed-forward
    block of every layer; `pfeiffer`: after the feed-forward block only (half the size)."""
    reduction_factor: float = Field(16, gt=0)
    """Bottleneck width as hidden size / this factor (16 on a 384-wide MiniLM: 24)."""
    bottleneck_size: int | None = Field(None, gt=0)
    """Bottleneck width in units; when set it replaces `reduction_factor`."""
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    """Non-linearity between the down- and up-projection."""


@register_method
class Adapter(Method):
    name = "adapter"
    Config = AdapterConfig
    config: AdapterConfig
    summary = "bottleneck adapters after attention and/or feed-forward blocks (Houlsby, Pfeiffer); no merge"

    def bottleneck_width(self, hidden: int) -> int:
        c = self.config
        return c.bottleneck_size or max(1, round(hidden / c.reduction_factor))

    def apply(self, body, *, causal: bool):
        from llmtune.methods.adapters import _layers as bottleneck

        freeze(body)
        sites = bottleneck.find_sites(body, self.config.placement)
        hidden = body.config.hidden_size
        adapters = bottleneck.insert_adapters(body, sites, hidden, self.bottleneck_width(hidden),
                                              self.config.activation)
        for adapter in adapters.values():
            adapter.requires_grad_(True)
        return body

    def save(self, body, out_dir: Path) -> None:
        from llmtune.methods.adapters import _layers as bottleneck
        from llmtune.models.layers import transformer_blocks

        sites = bottleneck.find_sites(body, self.config.placement)
        adapters = bottleneck.find_adapters(body, sites)
        hidden = body.config.hidden_size
        bottleneck.save_adapters(out_dir, adapters, {
            "placement": self.config.placement, "sites": sites, "hidden_size": hidden,
            "bottleneck_size": self.bottleneck_width(hidden), "activation": self.config.activation,
            "num_layers": len(transformer_blocks(body)), "base_model": body.config.name_or_path,
            "architecture": type(body).__name__,
        })

    def load(self, body, from_dir: Path, *, causal: bool):
        from llmtune.methods.adapters import _layers as bottleneck

        # The saved config, not the recipe, says where the adapters go: the folder stands alone.
        bottleneck.load_adapters(body, from_dir)
        return body
