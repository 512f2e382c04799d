"""IA3 through peft: learned vectors that rescale keys, values and feed-forward activations.

Infused Adapter by Inhibiting and Amplifying Inner Activations (Liu et al. 2022). Each
vector starts at ones (the model starts unchanged) and, being a per-channel scale of a
linear layer, folds into that layer's weight: IA3 merges.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from llmtune.methods.base import Method, MethodConfig
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
class Ia3(Method):
    name = "ia3"
    Config = Ia3Config
    summary = "IA3: learned rescaling vectors on keys, values and feed-forward layers; merges"
    can_merge = True

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

    def apply(self, model) -> None:
        from peft import get_peft_model

        from llmtune.errors import UserError

        try:
            model.body = get_peft_model(model.body, self.peft_config(model.is_causal))
        except ValueError as exc:
            raise UserError(f"method ia3: peft refused the settings ({exc}); check method.target_modules "
                            f"and method.feedforward_modules (the latter must be a subset of the former)") from None
        if model.head is not None:
            model.head.requires_grad_(True)

    def save(self, model, out_dir: Path) -> None:
        model.body.save_pretrained(out_dir)
        model.save_head(out_dir)

    def load(self, model, from_dir: Path) -> None:
        from peft import PeftModel

        model.body = PeftModel.from_pretrained(model.body, str(from_dir))
        model.load_head(from_dir)

    def merge(self, model):
        return model.body.merge_and_unload()
