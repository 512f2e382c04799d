"""The method contract: everything the rest of llmtune may ask of a method is declared on
`Method` below, with what it means. Callers outside llmtune/methods use these names only
(no getattr/hasattr reaches onto a method or its options; tests/test_method_contract.py
holds it); a method answers by overriding them.

A method sees only the body (the transformers model). The run around it builds the body,
adds and trains the task head (the pooled classifier of a classification run), saves it,
and owns the run's life (run directory, manifest, metrics, signals, final/). Most methods
train in the run's own loop; a method that trains in its own way (through trl, or by
fitting a closed-form model) sets `trains_itself` and implements `fit(job)` (methods/job.py).

Nothing here imports torch or anything from llmtune.train: the run calls methods, never
the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from llmtune.strict_model import StrictModel

if TYPE_CHECKING:
    from llmtune.methods.job import Job, Outcome


class MethodConfig(StrictModel):
    """Base of every method's options. Subclasses add `name: Literal['<method>']`."""

    if TYPE_CHECKING:
        name: str

    def resolve_paths(self, base_dir: Path) -> "MethodConfig":
        """The same options with any path made absolute against the recipe's folder; called
        once when the recipe loads, so later stages only ever see absolute paths."""
        return self


# Tasks a method can train. Preference/RL methods declare their own.
SUPERVISED_TASKS = frozenset({"classification", "causal_lm", "sft"})


class Method:
    name: ClassVar[str]
    """What recipes write as `method.name`."""
    Config: ClassVar[type[MethodConfig]]
    """The method's options (the recipe's `method` section)."""
    summary: ClassVar[str]
    """One line for `llmtune methods`."""
    tasks: ClassVar[frozenset[str]] = SUPERVISED_TASKS
    """The `data.task`s it trains."""
    can_merge: ClassVar[bool] = False
    """Whether `merge` folds what it trained into plain base weights."""
    trains_itself: ClassVar[bool] = False
    """True for methods that implement `fit` (the run's loop is not used)."""
    trains: ClassVar[bool] = True
    """False for a method that trains nothing (in-context: the base model answers from
    prompts); its run records an evaluation, and `llmtune export` has nothing to export."""
    model_kind: ClassVar[Literal["task", "policy", "reward"]] = "task"
    """What training builds: `task`, llmtune's TaskModel (the body and the task's head,
    assembled by the run); `policy`, a causal LM the method loads itself (`load_model`) and
    trains through trl; `reward`, a one-score sequence classifier, likewise."""
    uses_reference: ClassVar[bool] = False
    """Whether training compares the model with a frozen copy of where it started (DPO, KTO, RL)."""
    peft_form: ClassVar[bool] = False
    """Whether the method, whose own saved form is not peft's, can also write what it trained
    in a form plain peft loads (`to_peft`); `llmtune export` adds it beside the method's files."""
    virtual_tokens_at: ClassVar[Literal["input", "attention"] | None] = None
    """Methods that learn positions which are not input tokens (`virtual_tokens` of them):
    `input` (in front of the input) or `attention` (in front of every layer's keys and
    values). `llmtune preview` shows them as such; packed rows cannot hold them."""

    def __init__(self, config: MethodConfig):
        self.config = config

    def result_kind(self, task: str) -> str:
        """What a trained run of this method on `task` holds: `causal_lm` (a model that generates
        text: chat, generate, serve and GGUF export take it), `classifier` (llmtune's pooled head
        over the body), `reward` (a one-score sequence classifier) or `encoder` (a sentence
        encoder trained for retrieval: embed, index --encoder and query take it)."""
        return "classifier" if task == "classification" else "causal_lm"

    @property
    def virtual_tokens(self) -> int:
        """How many learned positions the method adds where `virtual_tokens_at` says (0: none)."""
        return 0

    def holds_reference_copy(self) -> bool:
        """Whether training keeps a whole frozen copy of the starting model beside the one it
        trains (with LoRA the frozen base is the reference, so no copy is kept)."""
        return False

    def generated_tokens(self) -> int:
        """Tokens each training row grows by while training generates (online RL's completions)."""
        return 0

    # -- building -----------------------------------------------------------------------
    def apply(self, body: Any, *, causal: bool) -> Any:
        """Freeze or wrap `body` so that exactly the method's parameters require grad;
        return the body to train (the same object, or a wrapper around it)."""
        raise NotImplementedError

    def fused_forward(self, model: Any) -> int:
        """Give the layers the method added (in `model`, after `apply`) a faster forward that
        computes the same function of the same weights and dropout masks; returns how many
        layers got it. The run's loop calls it when `train.fused_forward` is on."""
        return 0

    def load_model(self, recipe: Any, tok: Any) -> Any:
        """The model to train, for methods that load their own (`model_kind` policy or reward)."""
        raise NotImplementedError(f"method {self.name!r} trains the run's task model")

    def prepare_rows(self, rows: list[dict], tok: Any, recipe: Any) -> list[dict]:
        """Adjust normalised preference rows before training sees them (e.g. cut over-long prompts)."""
        return rows

    def body_source(self, base: str, final_dir: Path) -> str:
        """Where the body of a trained run loads from: the base model, or final/ if the
        method saved a whole body there."""
        return base

    # -- saving and loading -------------------------------------------------------------
    def save(self, body: Any, out_dir: Path) -> None:
        """Write only what the method trained, in a form plain transformers/peft can load."""

    def load(self, body: Any, from_dir: Path, *, causal: bool) -> Any:
        """Put what `save` wrote back onto a freshly built base body; return the body."""
        return body

    def merge(self, body: Any) -> Any:
        """Return a plain transformers body with the method folded in (only if can_merge)."""
        raise NotImplementedError(f"method {self.name!r} cannot be merged into the base weights")

    def to_peft(self, body: Any, out_dir: Path, *, causal: bool) -> bool:
        """Write what the method trained (`body`: the loaded trained body) in a form plain peft
        loads, for `llmtune export` (only where `peft_form`); returns whether it wrote anything."""
        return False

    # -- training and evaluation for methods that train themselves ----------------------
    def fit(self, job: Job) -> Outcome:
        """Train (only for `trains_itself` methods)."""
        raise NotImplementedError(f"method {self.name!r} trains in the run's loop")

    def resumable_checkpoint(self, checkpoints: Path) -> Path | None:
        """The newest checkpoint the method's own training (`fit`) left in `checkpoints` that a
        resume continues from; None when there is none or the run's loop keeps the checkpoints."""
        return None

    def evaluate(self, recipe: Any, final_dir: Path | None, limit: int | None, reporter: Any) -> dict[str, Any] | None:
        """Score a trained run (final_dir) or the base model (None) for `llmtune eval`.

        Return None to use the supervised evaluation (classification / causal LM); methods
        whose output is not a TaskModel (reward models, preference-tuned policies) override this."""
        return None


def freeze(module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
