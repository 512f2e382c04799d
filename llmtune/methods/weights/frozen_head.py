"""Selective finetuning: the body is frozen; the head (and optionally the last N blocks) trains.

For classification the head is the run's new pooled linear layer, so the method freezes
the body (except the last N blocks). For causal LMs the "head" is part of the body: the
output projection and the final norm, which this method unfreezes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from llmtune.methods.base import Method, MethodConfig, freeze
from llmtune.methods.registry import register_method


class FrozenHeadConfig(MethodConfig):
    name: Literal["frozen-head"]
    train_last_layers: int = Field(0, ge=0)
    """Also train the last N transformer blocks (0: only the head)."""


@register_method
class FrozenHead(Method):
    name = "frozen-head"
    Config = FrozenHeadConfig
    config: FrozenHeadConfig
    summary = "frozen body, new head trains (optionally the last N blocks too)"
    can_merge = True  # nothing to fold in: the body stays a plain transformers model

    def apply(self, body, *, causal: bool):
        from llmtune.models.layers import transformer_blocks

        freeze(body)
        n = self.config.train_last_layers
        if n:
            for block in list(transformer_blocks(body))[-n:]:
                block.requires_grad_(True)
        if causal:
            body.get_output_embeddings().requires_grad_(True)
            norm = _final_norm(body)
            if norm is not None:
                norm.requires_grad_(True)
        return body

    def _saves_body(self, body) -> bool:
        return any(p.requires_grad for p in body.parameters())

    def body_source(self, base: str, final_dir: Path) -> str:
        return str(final_dir) if (final_dir / "config.json").exists() else base

    def save(self, body, out_dir: Path) -> None:
        # Only the run's head trained: the body is the base model's, so nothing of it is saved.
        if self._saves_body(body):
            body.save_pretrained(out_dir)

    def merge(self, body):
        return body


def _final_norm(body):
    base = getattr(body, "base_model", body)
    for attr in ("norm", "ln_f", "final_layer_norm"):
        mod = getattr(base, attr, None)
        if mod is not None:
            return mod
    return None
