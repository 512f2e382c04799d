"""LoRA through peft, with the DoRA and rsLoRA switches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmtune.methods.base import MethodConfig
from llmtune.methods.peft_backed.base import PeftMethod
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
class Lora(PeftMethod):
    name = "lora"
    Config = LoraConfig
    config: LoraConfig
    summary = "low-rank adapters on chosen linear layers (DoRA, rsLoRA options); merges"

    def fused_forward(self, model) -> int:
        """Each plain LoRA linear layer adds its update inside one GEMM (_fused_lora.py)."""
        from llmtune.methods.peft_backed._fused_lora import use_fused_lora

        return use_fused_lora(model)

    def peft_config(self, causal: bool):
        from peft import LoraConfig as PeftLoraConfig
        from peft import TaskType

        c = self.config
        return PeftLoraConfig(
            r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=c.target_modules,
            use_dora=c.dora, use_rslora=c.rslora, bias=c.bias,
            task_type=TaskType.CAUSAL_LM if causal else None,
        )
