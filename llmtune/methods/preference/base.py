"""What every trl-backed method shares: it trains itself (`fit` runs a trl trainer inside the
run's life) and `evaluate` scores a run's final/ (or the base model) with the same trainer's
evaluation.

A method says which trl config and trainer it uses, what model it trains (a policy or a
reward model) and whether it needs a frozen reference; nothing here names a method."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from llmtune.methods.base import Method
from llmtune.methods.preference.setup import Setup


class TrlMethod(Method):
    tasks: ClassVar[frozenset[str]] = frozenset({"preference"})
    trains_itself = True
    can_merge = True  # a policy is a causal LM: a LoRA one folds in, a full one is plain already
    model_kind: ClassVar[Literal["policy", "reward"]] = "policy"
    uses_reference = True
    config: Any
    """The preference method's own options; every one has `peft` (LoRA settings, or None)."""
    pair_score: ClassVar[str | None] = "implicit"
    """How a held-out pair is scored (_pair_scores.py): `implicit` (beta times the policy's
    log-ratio to the reference), `odds` (beta times the mean token log-probability) or
    `reward` (a reward model's score); None for methods evaluated otherwise (online RL)."""

    # -- what the method builds -------------------------------------------------------------
    def trl_config(self, recipe) -> tuple[type, dict]:
        """(trl config class, the method's options as that config's keyword arguments)."""
        raise NotImplementedError

    def build_trainer(self, setup: Setup, model, tok, train, eval, args, callbacks, ref_model):
        raise NotImplementedError

    def check(self, recipe) -> None:
        """Refuse option combinations trl would reject later (UserError, exit 2)."""

    def manifest_extra(self, setup: Setup) -> dict:
        """What else manifest.json should record about this run (e.g. the reward used)."""
        return {}

    def load_model(self, recipe, tok):
        from llmtune.methods.preference._models import load_policy

        return load_policy(recipe)

    def load_trained(self, recipe, tok, final: Path):
        from llmtune.methods.preference._models import load_trained_policy

        return load_trained_policy(recipe, final)

    def peft(self, setup: Setup):
        """peft config for training (None: full training, or the model is already trained)."""
        from llmtune.methods.preference.options import peft_config

        if not setup.training:
            return None
        return peft_config(self.config.peft, sequence_classifier=self.model_kind == "reward")

    def reference(self, setup: Setup, model):
        """A frozen copy of the starting model, passed to trl explicitly: trl would otherwise
        reload it by name, which fails for models built from a config. With LoRA the frozen
        base is the reference (trl disables the adapter), so no copy is made."""
        from llmtune.methods.preference._models import frozen_copy, load_policy

        if not self.uses_reference:
            return None
        if setup.training:
            # Reference log-probabilities computed before training come from the untrained
            # policy itself (trl's precompute pass), so no copy is kept either.
            return None if self.config.peft is not None or self.precomputes_reference else frozen_copy(model)
        return frozen_copy(load_policy(setup.recipe))

    @property
    def precomputes_reference(self) -> bool:
        """Whether the reference's log-probabilities of every row are computed once before
        training (trl's precompute pass) instead of by a reference forward every step."""
        return False

    # -- Method hooks ---------------------------------------------------------------------
    def result_kind(self, task: str) -> str:
        return "reward" if self.model_kind == "reward" else "causal_lm"

    def holds_reference_copy(self) -> bool:
        return self.uses_reference and self.config.peft is None and not self.precomputes_reference

    def resumable_checkpoint(self, checkpoints: Path) -> Path | None:
        """trl's newest complete checkpoint-N folder."""
        from llmtune.methods.preference._trainer import last_checkpoint

        return last_checkpoint(checkpoints)

    def fit(self, job):
        from llmtune.methods.preference._runner import fit_trl

        return fit_trl(job, self)

    def evaluate(self, recipe, final_dir: Path | None, limit: int | None, reporter) -> dict[str, Any] | None:
        from llmtune.methods.preference._runner import evaluate_trl

        return evaluate_trl(self, recipe, final_dir, limit, reporter)

    def body_source(self, base: str, final_dir: Path) -> str:
        """Without LoRA, final/ holds the whole trained model."""
        return str(final_dir) if (Path(final_dir) / "config.json").exists() else base

    def load(self, body, from_dir: Path, *, causal: bool):
        """A policy trained with LoRA: its adapter onto the base (a full model was loaded
        whole through body_source)."""
        from llmtune.methods.preference._models import is_adapter

        if not is_adapter(from_dir):
            return body
        from peft import PeftModel

        return PeftModel.from_pretrained(body, str(from_dir))

    def merge(self, body):
        return body.merge_and_unload() if hasattr(body, "merge_and_unload") else body

    def apply(self, body, *, causal: bool):
        """The model as trl trains it: whole, or with LoRA adapters when `method.peft` is set
        (trl itself wraps it in `fit`; this is the same wrapping, for `llmtune preview`)."""
        from llmtune.methods.preference.options import peft_config

        config = peft_config(self.config.peft, sequence_classifier=self.model_kind == "reward")
        if config is None:
            return body
        from peft import get_peft_model

        return get_peft_model(body, config)


def precompute_possible() -> bool:
    """trl's precompute pass (1.16) writes the reference log-probabilities into rank 0's
    temporary datasets cache, which the other ranks cannot open for in-memory rows
    (FileNotFoundError, then a hang): with several processes the reference runs per step."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) <= 1
