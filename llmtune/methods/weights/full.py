"""Complete finetuning: every weight of the body trains; the whole body is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from llmtune.methods.base import Method, MethodConfig
from llmtune.methods.registry import register_method


class FullConfig(MethodConfig):
    name: Literal["full"]


@register_method
class Full(Method):
    name = "full"
    Config = FullConfig
    config: FullConfig
    summary = "complete finetuning: every weight trains"
    can_merge = True  # nothing to fold in: the trained body is already a plain model

    def apply(self, body, *, causal: bool):
        for p in body.parameters():
            p.requires_grad_(True)
        return body

    def body_source(self, base: str, final_dir: Path) -> str:
        return str(final_dir)

    def save(self, body, out_dir: Path) -> None:
        body.save_pretrained(out_dir)

    def merge(self, body):
        return body
