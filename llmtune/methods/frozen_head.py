"""Selective finetuning: the body is frozen; the head (and optionally the last N blocks) trains.

For classification the head is the new pooled linear layer. For causal LMs the "head"
is the output projection and the final norm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from llmtune.methods.base import Method, MethodConfig
from llmtune.methods.registry import register_method


class FrozenHeadConfig(MethodConfig):
    name: Literal["frozen-head"]
    train_last_layers: int = Field(0, ge=0)
    """Also train the last N transformer blocks (0: only the head)."""


@register_method
class FrozenHead(Method):
    name = "frozen-head"
    Config = FrozenHeadConfig
    summary = "frozen body, new head trains (optionally the last N blocks too)"
    can_merge = True  # nothing to fold in: the body stays a plain transformers model

    def apply(self, model) -> None:
        from llmtune.models.layers import transformer_blocks

        for p in model.body.parameters():
            p.requires_grad_(False)
        n = self.config.train_last_layers
        if n:
            for block in list(transformer_blocks(model.body))[-n:]:
                for p in block.parameters():
                    p.requires_grad_(True)
        if model.head is not None:
            for p in model.head.parameters():
                p.requires_grad_(True)
        else:
            out = model.body.get_output_embeddings()
            for p in out.parameters():
                p.requires_grad_(True)
            norm = _final_norm(model.body)
            if norm is not None:
                for p in norm.parameters():
                    p.requires_grad_(True)

    def _saves_body(self, model) -> bool:
        return model.head is None or self.config.train_last_layers > 0

    def body_source(self, base: str, final_dir: Path) -> str:
        return str(final_dir) if (final_dir / "config.json").exists() else base

    def save(self, model, out_dir: Path) -> None:
        # Only the head trained: the body is the base model's, so only the head is saved.
        if self._saves_body(model):
            model.body.save_pretrained(out_dir)
        model.save_head(out_dir)

    def merge(self, model):
        return model.body


def _final_norm(body):
    base = getattr(body, "base_model", body)
    for attr in ("norm", "ln_f", "final_layer_norm"):
        mod = getattr(base, attr, None)
        if mod is not None:
            return mod
    return None
