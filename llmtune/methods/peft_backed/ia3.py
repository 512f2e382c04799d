"""IA3 through peft: learned vectors that rescale keys, values and feed-forward activations.

Infused Adapter by Inhibiting and Amplifying Inner Activations (Liu et al. 2022). Each
vector starts at ones (the model starts unchanged) and, being a per-channel scale of a
linear layer, folds into that layer's weight: IA3 merges.
"""

from __future__ import annotations

from typing import Literal

from llmtune.methods.base import MethodConfig
from llmtune.methods.peft_backed.base import PeftMethod
from llmtune.methods.registry import register_method


class Ia3Config(MethodConfig):
    name: Literal["ia3"]
    target_modules: list[str] | None = None
    """Modules to rescale (e.g. [key, value, output.dense]); null for peft's
    per-architecture default (BERT: key, value, output.dense; Llama: k_proj, v_proj,
    down_proj; GPT-2: c_attn, mlp.c_proj)."""
    feedforward_modules: list[str] | None = None
    """Which of `target_modules` are feed-forward layers (their input is rescaled rather than
    their output). null: peft's default when `target_modules` is null, else none."""


@register_method
class Ia3(PeftMethod):
    name = "ia3"
    Config = Ia3Config
    config: Ia3Config
    summary = "IA3: learned rescaling vectors on keys, values and feed-forward layers; merges"

    def peft_config(self, causal: bool):
        from peft import IA3Config, TaskType

        c = self.config
        feedforward = c.feedforward_modules
        if feedforward is None and c.target_modules is not None:
            # peft would fall back to its architecture default, which need not be a subset
            # of the user's targets (peft then refuses); none is the honest reading.
            feedforward = []
        return IA3Config(target_modules=c.target_modules, feedforward_modules=feedforward,
                         task_type=TaskType.CAUSAL_LM if causal else None)
