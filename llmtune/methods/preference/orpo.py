"""ORPO: odds-ratio preference optimisation (SFT on the chosen response plus an odds-ratio
penalty on the rejected one), through trl.experimental's ORPOTrainer. No reference model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmtune.errors import UserError
from llmtune.methods.base import MethodConfig
from llmtune.methods.preference.base import TrlMethod
from llmtune.methods.preference.options import PeftSection
from llmtune.methods.registry import register_method


class OrpoConfig(MethodConfig):
    name: Literal["orpo"]
    beta: float = Field(0.1, gt=0)
    """Weight of the odds-ratio term against the SFT loss (lambda in the ORPO paper)."""
    peft: PeftSection | None = None
    """LoRA options to train adapters only; null trains every weight."""


def orpo_classes():
    """(ORPOConfig, ORPOTrainer): trl keeps them in trl.experimental, which may move or
    drop them in any release, so the import is isolated here."""
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError as exc:
        from importlib.metadata import version

        raise UserError(f"method orpo needs trl.experimental.orpo, which the installed trl {version('trl')} does "
                        f"not provide ({exc}); install a trl release that has it (1.16 does), or use "
                        f"method dpo") from None
    return ORPOConfig, ORPOTrainer


@register_method
class Orpo(TrlMethod):
    name = "orpo"
    Config = OrpoConfig
    config: OrpoConfig
    summary = "odds-ratio preference optimisation, no reference model (trl.experimental ORPOTrainer)"
    uses_reference = False
    pair_score = "odds"

    def trl_config(self, recipe):
        config_cls, _ = orpo_classes()
        return config_cls, {"beta": self.config.beta, "max_length": recipe.data.max_length,
                            "remove_unused_columns": False}  # its collator needs the raw columns

    def build_trainer(self, setup, model, tok, train, eval, args, callbacks, ref_model):
        _, trainer_cls = orpo_classes()
        return trainer_cls(model=model, args=args, train_dataset=train, eval_dataset=eval, processing_class=tok,
                           callbacks=callbacks, peft_config=self.peft(setup))
