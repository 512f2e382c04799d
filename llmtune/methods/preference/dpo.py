"""DPO: direct preference optimisation through trl's DPOTrainer.

The policy learns to raise the likelihood of chosen responses over rejected ones relative
to a frozen reference (the starting model), without a reward model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmtune.methods.base import MethodConfig
from llmtune.methods.preference.base import TrlMethod, precompute_possible
from llmtune.methods.preference.options import PeftSection
from llmtune.methods.registry import register_method


class DpoConfig(MethodConfig):
    name: Literal["dpo"]
    beta: float = Field(0.1, gt=0)
    """How far the policy may move from the reference: higher keeps it closer (the
    temperature of the implicit reward beta * log(pi / pi_ref))."""
    loss_type: Literal["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero",
                       "apo_down", "sigmoid_norm"] = "sigmoid"
    """The preference loss: `sigmoid` is the DPO paper's; `ipo`, `hinge`, `robust` (with
    label_smoothing) and the others are trl's variants."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """Assumed probability that a pair's preference is flipped (the `robust` loss and
    conservative DPO)."""
    precompute_ref_log_probs: bool = True
    """Compute the reference model's log-probabilities of every training and eval row once,
    before training (trl's precompute pass), instead of a reference forward at every step and
    every evaluation: with several epochs or evaluations the reference runs once per row, and
    a full finetune keeps no frozen copy in memory while it trains. Single-process runs only: under
    several processes the reference runs per step (trl's pass cannot share its result)."""
    peft: PeftSection | None = None
    """LoRA options to train adapters only (the frozen base is then the reference); null
    trains every weight against a frozen copy."""


def truncation_mode(recipe) -> str:
    return "keep_end" if recipe.data.truncation_side == "left" else "keep_start"


@register_method
class Dpo(TrlMethod):
    name = "dpo"
    Config = DpoConfig
    config: DpoConfig
    summary = "direct preference optimisation on chosen/rejected pairs (trl DPOTrainer)"

    def trl_config(self, recipe):
        from trl import DPOConfig

        c = self.config
        return DPOConfig, {"beta": c.beta, "loss_type": [c.loss_type], "label_smoothing": c.label_smoothing,
                           "max_length": recipe.data.max_length, "truncation_mode": truncation_mode(recipe),
                           "precompute_ref_log_probs": self.precomputes_reference}

    @property
    def precomputes_reference(self) -> bool:
        return self.config.precompute_ref_log_probs and precompute_possible()

    def build_trainer(self, setup, model, tok, train, eval, args, callbacks, ref_model):
        from trl import DPOTrainer

        return DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train, eval_dataset=eval,
                          processing_class=tok, callbacks=callbacks, peft_config=self.peft(setup))
