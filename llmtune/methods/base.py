"""What a method is: how it wraps the model, which parameters train, what gets saved.

The training loop never looks at a method's name; it calls these hooks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from llmtune.models.task_model import TaskModel
    from llmtune.train.context import RunContext


class MethodConfig(BaseModel):
    """Base of every method's options. Subclasses add `name: Literal['<method>']`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


# Tasks a method can train. Preference/RL methods declare their own.
SUPERVISED_TASKS = frozenset({"classification", "causal_lm", "sft"})

HEAD_FILE = "head.safetensors"
TRAINABLE_FILE = "trainable.safetensors"


class Method:
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    summary: ClassVar[str]
    tasks: ClassVar[frozenset[str]] = SUPERVISED_TASKS
    can_merge: ClassVar[bool] = False
    virtual_tokens_at: ClassVar[str | None] = None
    """Methods that learn positions which are not input tokens (`config.num_virtual_tokens` of
    them): `input` (in front of the input) or `attention` (in front of every layer's keys and
    values). `llmtune preview` shows them as such."""

    def __init__(self, config: MethodConfig):
        self.config = config

    # -- building -----------------------------------------------------------------------
    def apply(self, model: "TaskModel") -> None:
        """Wrap or freeze `model` in place so that exactly the trainable parts require grad."""
        raise NotImplementedError

    def body_source(self, base: str, final_dir: Path) -> str:
        """Where the body of a trained run loads from: the base model, or final/ if the
        method saved a whole body there."""
        return base

    # -- saving and loading -------------------------------------------------------------
    def save(self, model: "TaskModel", out_dir: Path) -> None:
        """Write only what was trained, in a form plain transformers/peft can load."""
        model.save_head(out_dir)

    def load(self, model: "TaskModel", from_dir: Path) -> None:
        """Put what `save` wrote back onto a freshly built base model."""
        model.load_head(from_dir)

    def merge(self, model: "TaskModel"):
        """Return a plain transformers body with the method folded in (only if can_merge)."""
        raise NotImplementedError(f"method {self.name!r} cannot be merged into the base weights")

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, loaded, final_dir: Path | None, limit: int | None, reporter) -> dict[str, Any] | None:
        """Score a trained run (final_dir) or the base model (None) for `llmtune eval`.

        Return None to use the supervised evaluation (classification / causal LM); methods
        whose output is not a TaskModel (reward models, preference-tuned policies, a
        linear probe) override this."""
        return None

    # -- training -----------------------------------------------------------------------
    def fit(self, ctx: "RunContext") -> dict[str, Any]:
        """Train. The default is llmtune's Accelerate loop; trl-backed methods override."""
        from llmtune.train.loop import train_loop

        return train_loop(ctx, self)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
