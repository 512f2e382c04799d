"""LoRA through peft, with the DoRA and rsLoRA switches."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from llmtune.methods.base import Method, MethodConfig
from llmtune.methods.registry import register_method


class LoraConfig(MethodConfig):
    name: Literal["lora"]
    r: int = Field(8, gt=0)
    """Rank of the low-rank update."""
    alpha: float = Field(16, gt=0)
    """Scaling numerator: the update is scaled by alpha/r (alpha/sqrt(r) with rslora)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[str] | Literal["all-linear"] | None = None
    """Module names to adapt (e.g. [query, value]); `all-linear`; or null for peft's
    per-architecture default."""
    dora: bool = False
    """Weight-decomposed LoRA (DoRA): learn magnitude and direction separately."""
    rslora: bool = False
    """Rank-stabilised scaling alpha/sqrt(r), which keeps large ranks trainable."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases train alongside the adapters."""


@register_method
class Lora(Method):
    name = "lora"
    Config = LoraConfig
    summary = "low-rank adapters on chosen linear layers (DoRA, rsLoRA options); merges"
    can_merge = True

    def peft_config(self, causal: bool):
        from peft import LoraConfig as PeftLoraConfig
        from peft import TaskType

        c = self.config
        return PeftLoraConfig(
            r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=c.target_modules,
            use_dora=c.dora, use_rslora=c.rslora, bias=c.bias,
            task_type=TaskType.CAUSAL_LM if causal else None,
        )

    def apply(self, model) -> None:
        from peft import get_peft_model

        model.body = get_peft_model(model.body, self.peft_config(model.is_causal))

    def save(self, model, out_dir: Path) -> None:
        model.body.save_pretrained(out_dir)
        model.save_head(out_dir)

    def load(self, model, from_dir: Path) -> None:
        from peft import PeftModel

        model.body = PeftModel.from_pretrained(model.body, str(from_dir))
        model.load_head(from_dir)

    def merge(self, model):
        return model.body.merge_and_unload()
