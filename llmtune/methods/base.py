"""What a method is: how it wraps the model's body, which of its parameters train, what is saved.

A method sees only the body (the transformers model). The run around it builds the body,
adds and trains the task head (the pooled classifier of a classification run), saves it,
and owns the run's life (run directory, manifest, metrics, signals, final/). Most methods
train in the run's own loop; a method that trains in its own way (through trl, or by
fitting a closed-form model) sets `trains_itself` and implements `fit(job)`.

Nothing here imports torch or anything from llmtune.train: the run calls methods, never
the other way round.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

from llmtune.strict_model import StrictModel


class MethodConfig(StrictModel):
    """Base of every method's options. Subclasses add `name: Literal['<method>']`."""

    def resolve_paths(self, base_dir: Path) -> "MethodConfig":
        """The same options with any path made absolute against the recipe's folder; called
        once when the recipe loads, so later stages only ever see absolute paths."""
        return self


# Tasks a method can train. Preference/RL methods declare their own.
SUPERVISED_TASKS = frozenset({"classification", "causal_lm", "sft"})


class Job(Protocol):
    """What the run hands a method that trains itself (`Method.fit`)."""

    recipe: Any
    """The resolved recipe (every path absolute)."""
    reporter: Any
    checkpoints: Path
    """The folder for this method's resumable state."""
    resume: bool
    """Continue from the newest checkpoint in `checkpoints` (if there is one)."""
    interactive: bool
    """Whether a person watches (a terminal): progress bars may be drawn."""

    def begin(self, manifest: dict, resumed_step: int = 0) -> None:
        """Training is about to start: record what the run is (data, tokenizer, parameters),
        check a resumed run against its manifest, drop metrics past `resumed_step`."""

    def log(self, record: dict) -> None:
        """One metrics.jsonl record (`step` first); only the main process writes."""

    def stop_requested(self) -> int | None:
        """The signal (SIGINT/SIGTERM) asking the run to checkpoint and stop, if any."""


@dataclass
class Outcome:
    """What a finished (or interrupted) training leaves for the run to record and save."""

    steps: int
    trainable_parameters: int
    total_parameters: int
    tokenizer: Any
    model: Any = None
    """The trained TaskModel: the run saves `method.save(model.body)`, the head and the tokenizer."""
    save: Callable[[Path], None] | None = None
    """Instead of `model`: writes the trained model's files into final/ (trl trainers)."""
    eval: dict = field(default_factory=dict)
    """Metrics of the final evaluation (full form; the manifest keeps the headline)."""
    info: dict = field(default_factory=dict)
    """Extra llmtune.json fields (how to load and use final/)."""
    manifest: dict = field(default_factory=dict)
    """Extra manifest fields known only at the end."""
    train_tokens: int | None = None
    """Real (non-padding) tokens trained on, when the trainer counts them."""
    train_seconds: float | None = None
    """Training time, when the trainer knows it better than the run's clock (a resumed run's
    earlier segments included)."""
    eval_rows: int | None = None
    """How many rows the final evaluation scored."""
    stopped_by: int | None = None
    """A signal stopped training after a checkpoint: the run is to be resumed."""
    diverged: str | None = None
    """Why training stopped on a non-finite loss or gradient (the run fails, exit 1)."""
    last_checkpoint: Path | None = None
    """The newest complete checkpoint, named in stop and divergence messages."""


class Method:
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    summary: ClassVar[str]
    tasks: ClassVar[frozenset[str]] = SUPERVISED_TASKS
    can_merge: ClassVar[bool] = False
    trains_itself: ClassVar[bool] = False
    """True for methods that implement `fit` (the run's loop is not used)."""
    virtual_tokens_at: ClassVar[str | None] = None
    """Methods that learn positions which are not input tokens (`config.num_virtual_tokens` of
    them): `input` (in front of the input) or `attention` (in front of every layer's keys and
    values). `llmtune preview` shows them as such."""

    def __init__(self, config: MethodConfig):
        self.config = config

    def result_kind(self, task: str) -> str:
        """What a trained run of this method on `task` holds: `causal_lm` (a model that generates
        text: chat, generate, serve and GGUF export take it), `classifier` (llmtune's pooled head
        over the body) or `reward` (a one-score sequence classifier)."""
        return "classifier" if task == "classification" else "causal_lm"

    # -- building -----------------------------------------------------------------------
    def apply(self, body, *, causal: bool):
        """Freeze or wrap `body` so that exactly the method's parameters require grad;
        return the body to train (the same object, or a wrapper around it)."""
        raise NotImplementedError

    def body_source(self, base: str, final_dir: Path) -> str:
        """Where the body of a trained run loads from: the base model, or final/ if the
        method saved a whole body there."""
        return base

    # -- saving and loading -------------------------------------------------------------
    def save(self, body, out_dir: Path) -> None:
        """Write only what the method trained, in a form plain transformers/peft can load."""

    def load(self, body, from_dir: Path, *, causal: bool):
        """Put what `save` wrote back onto a freshly built base body; return the body."""
        return body

    def merge(self, body):
        """Return a plain transformers body with the method folded in (only if can_merge)."""
        raise NotImplementedError(f"method {self.name!r} cannot be merged into the base weights")

    # -- training and evaluation for methods that train themselves ----------------------
    def fit(self, job: Job) -> Outcome:
        """Train (only for `trains_itself` methods)."""
        raise NotImplementedError(f"method {self.name!r} trains in the run's loop")

    def evaluate(self, recipe, final_dir: Path | None, limit: int | None, reporter) -> dict[str, Any] | None:
        """Score a trained run (final_dir) or the base model (None) for `llmtune eval`.

        Return None to use the supervised evaluation (classification / causal LM); methods
        whose output is not a TaskModel (reward models, preference-tuned policies) override this."""
        return None


def freeze(module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
