"""What passes between a run and a method that trains itself (`Method.fit`): the run hands
the method a `Job`, the method hands back an `Outcome`. llmtune's own loop returns an
`Outcome` too, so the run records every trainer's result one way (train/session.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from llmtune.console import Reporter
    from llmtune.models.task_model import TaskModel
    from llmtune.recipe.schema import RecipeBase


class Job(Protocol):
    """What the run hands a method that trains itself (`Method.fit`)."""

    recipe: RecipeBase
    """The resolved recipe (every path absolute)."""
    reporter: Reporter
    checkpoints: Path
    """The folder for this method's resumable state."""
    resume: bool
    """Continue from the newest checkpoint in `checkpoints` (if there is one)."""
    interactive: bool
    """Whether a person watches (a terminal): progress bars may be drawn."""
    store_demos: Callable[..., list[list[int]]] | None
    """How `eval.selection: store` picks demonstrations (llmtune.index.demos.select_from_store,
    handed down by the command, since the index sits above training); None where no command
    handed one, and store selection is then refused with what to run instead."""

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
