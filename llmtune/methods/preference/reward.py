"""Reward modelling: a sequence classifier with one score, trained so that the chosen
response of each pair scores above the rejected one (trl's RewardTrainer). Its run
directory is what `method: rl` reads as `reward_model:`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmtune.methods.base import MethodConfig
from llmtune.methods.preference.base import TrlMethod
from llmtune.methods.preference.options import PeftSection
from llmtune.methods.registry import register_method


class RewardConfig(MethodConfig):
    name: Literal["reward"]
    center_rewards_coefficient: float | None = Field(None, ge=0)
    """Penalty on the mean reward's square, keeping scores centred on zero (null: off)."""
    peft: PeftSection | None = None
    """LoRA options to train adapters and the score head only; null trains every weight."""


@register_method
class Reward(TrlMethod):
    name = "reward"
    Config = RewardConfig
    config: RewardConfig
    summary = "reward model (one-score sequence classifier) on preference pairs (trl RewardTrainer)"
    model_kind = "reward"
    uses_reference = False
    pair_score = "reward"
    can_merge = False  # a reward model is a sequence classifier, not a body under llmtune's head

    def load_model(self, recipe, tok):
        from llmtune.methods.preference._models import load_reward_base

        return load_reward_base(recipe.model, tok)

    def load_trained(self, recipe, tok, final):
        from llmtune.methods.preference._models import load_trained_reward

        return load_trained_reward(recipe.model, tok, final)

    def trl_config(self, recipe):
        from trl import RewardConfig as TrlRewardConfig

        return TrlRewardConfig, {"center_rewards_coefficient": self.config.center_rewards_coefficient,
                                 "max_length": recipe.data.max_length}

    def build_trainer(self, setup, model, tok, train, eval, args, callbacks, ref_model):
        from trl import RewardTrainer

        return RewardTrainer(model=model, args=args, train_dataset=train, eval_dataset=eval, processing_class=tok,
                             callbacks=callbacks, peft_config=self.peft(setup))
