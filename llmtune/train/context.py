"""Everything a method's fit() needs to know about the run it is part of."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmtune.console import Reporter
from llmtune.recipe.load import LoadedRecipe
from llmtune.train.run_dir import RunDir


@dataclass
class RunContext:
    loaded: LoadedRecipe
    run: RunDir
    reporter: Reporter
    resume: bool = False
    manifest_extra: dict = field(default_factory=dict)

    @property
    def recipe(self):
        return self.loaded.recipe

    @property
    def base_dir(self) -> Path:
        return self.loaded.base_dir
