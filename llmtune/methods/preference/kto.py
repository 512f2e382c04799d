"""KTO: preference tuning from unpaired judgements (this completion is good / bad),
through trl's KTOTrainer. Paired preference data is unpaired into one desirable and one
undesirable row per pair."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmtune.methods.base import MethodConfig
from llmtune.methods.preference.base import TrlMethod, precompute_possible
from llmtune.methods.preference.options import PeftSection
from llmtune.methods.registry import register_method


class KtoConfig(MethodConfig):
    name: Literal["kto"]
    beta: float = Field(0.1, gt=0)
    """How far the policy may move from the reference: higher keeps it closer."""
    loss_type: Literal["kto", "apo_zero_unpaired"] = "kto"
    """`kto` (the KTO paper's loss) or `apo_zero_unpaired`."""
    desirable_weight: float = Field(1.0, gt=0)
    """Weight of the loss on desirable rows (raise it when they are the minority)."""
    undesirable_weight: float = Field(1.0, gt=0)
    """Weight of the loss on undesirable rows (raise it when they are the minority)."""
    precompute_ref_log_probs: bool = True
    """Compute the reference model's log-probabilities of every training and eval row once,
    before training (trl's precompute pass), instead of a reference forward at every step and
    every evaluation: with several epochs or evaluations the reference runs once per row, and
    a full finetune keeps no frozen copy in memory while it trains. Single-process runs only: under
    several processes the reference runs per step (trl's pass cannot share its result)."""
    peft: PeftSection | None = None
    """LoRA options to train adapters only (the frozen base is then the reference); null
    trains every weight against a frozen copy."""


@register_method
class Kto(TrlMethod):
    name = "kto"
    Config = KtoConfig
    config: KtoConfig
    summary = "preference tuning from unpaired good/bad labels (trl KTOTrainer)"
    tasks = frozenset({"unpaired_preference", "preference"})

    def trl_config(self, recipe):
        from trl import KTOConfig

        c = self.config
        return KTOConfig, {"beta": c.beta, "loss_type": c.loss_type, "desirable_weight": c.desirable_weight,
                           "undesirable_weight": c.undesirable_weight, "max_length": recipe.data.max_length,
                           "precompute_ref_log_probs": self.precomputes_reference}

    @property
    def precomputes_reference(self) -> bool:
        return self.config.precompute_ref_log_probs and precompute_possible()

    def check(self, recipe) -> None:
        from llmtune.errors import UserError

        if recipe.train.batch_size < 2:
            raise UserError("method kto: train.batch_size must be at least 2 (KTO estimates its KL term from "
                            "mismatched prompt/completion pairs within a batch)")

    def build_trainer(self, setup, model, tok, train, eval, args, callbacks, ref_model):
        from trl import KTOTrainer

        return KTOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train, eval_dataset=eval,
                          processing_class=tok, callbacks=callbacks, peft_config=self.peft(setup))
