"""The one place that opens a finished run: its recipe, method, labels, tokenizer and the
trained model (base body + what the method saved + the head), or a recipe's untrained base
when given a recipe file. `llmtune eval`, `export` and `embed` all open runs through here."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from llmtune.console import Reporter
from llmtune.errors import UserError
from llmtune.methods.registry import method_for
from llmtune.models.task_model import INFO_FILE
from llmtune.recipe.load import LoadedRecipe, load_recipe, load_run_recipe

CAUSAL_LM, CLASSIFICATION, REWARD, ENCODER = "causal LM", "classification model", "reward model", "encoder"
"""What a run (or a model) holds: which verbs can use it."""


def holds(info: dict) -> str:
    """What a folder `llmtune export` wrote holds, from its llmtune.json (no method to ask):
    a reward model (trl's reward trainer), a classification model, or a causal LM (causal_lm,
    sft and the preference/RL policies). A run: `Target.holds`."""
    from llmtune.models.load import CAUSAL_TASKS

    if info.get("model_kind") == "reward":
        return REWARD
    if info.get("task") == "classification":
        return CLASSIFICATION
    if info.get("task") == "retrieval":
        return ENCODER
    if info.get("task") in CAUSAL_TASKS:
        return CAUSAL_LM
    raise UserError(f"llmtune.json names task {info.get('task')!r}, which this version of llmtune does not know")


@dataclass
class Target:
    """A run directory (trained weights in final/) or a recipe file (its base model)."""

    loaded: LoadedRecipe
    final: Path | None
    """The run's final/ folder; None when the target is a recipe."""

    @property
    def recipe(self):
        return self.loaded.recipe

    @property
    def run_dir(self) -> Path | None:
        return self.final.parent if self.final is not None else None

    @cached_property
    def method(self):
        return method_for(self.recipe.method)

    @cached_property
    def info(self) -> dict:
        """final/llmtune.json: task, method, base model, pooling, labels (empty for a recipe)."""
        if self.final is None:
            return {}
        return json.loads((self.final / INFO_FILE).read_text())

    @property
    def holds(self) -> str | None:
        """What final/ holds, as the method says (Method.result_kind); None for a recipe (its
        base model is not trained yet)."""
        if self.final is None:
            return None
        kind = self.method.result_kind(self.info.get("task", self.recipe.data.task))
        return {"causal_lm": CAUSAL_LM, "classifier": CLASSIFICATION, "reward": REWARD, "encoder": ENCODER}[kind]

    @property
    def labels(self) -> list[str] | None:
        return self.info.get("labels")

    def tokenizer(self):
        from llmtune.models.load import load_tokenizer

        if self.final is not None:
            return load_tokenizer(str(self.final))
        m = self.recipe.model
        return load_tokenizer(m.name, m.trust_remote_code, m.revision)

    def trained_model(self, recipe=None):
        """The run's TaskModel with its trained weights (None for a recipe target). `recipe`
        overrides the task the body is built for (prompting a causal LM, say)."""
        from llmtune.train.assemble import load_trained

        if self.final is None:
            return None
        return load_trained(recipe or self.recipe, self.method, self.final, self.labels)


def open_target(target: Path, overrides: list[str] | None = None) -> Target:
    target = Path(target)
    if target.is_dir():
        return open_run(target, overrides, instead="a run directory or a recipe file")
    if target.is_file():
        return Target(load_recipe(target, overrides or []), None)
    raise UserError(f"{target}: no such run directory or recipe file")


def open_run(run_dir: Path, overrides: list[str] | None = None, instead: str = "a run directory") -> Target:
    """`instead`: what the command takes, named in the message when `run_dir` is not a run
    (export and embed take only a run; eval also takes a recipe)."""
    run_dir = Path(run_dir)
    recipe_file = run_dir / "recipe.yaml"
    if not recipe_file.exists():
        raise UserError(f"{run_dir}: not a run directory (no recipe.yaml); pass {instead}, the folder "
                        f"`llmtune train` wrote (runs/<recipe name>/ unless output.dir says otherwise)")
    final = run_dir / "final"
    if not final.exists():
        raise UserError(f"{run_dir}: the run has no final/ model yet; finish it with "
                        f"`llmtune train <recipe> --resume`")
    loaded = load_run_recipe(recipe_file, overrides or [])
    for notice in loaded.notices:  # stderr: a --json document on stdout stays one document
        Reporter().warn(notice)
    return Target(loaded, final)
