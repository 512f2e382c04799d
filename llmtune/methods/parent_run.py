"""A finished run as the model of the next stage (`model.name: runs/sft`): reading the run back
(its resolved recipe and method), whether it can start a stage, and how it rendered prompts.
The merged model folder a stage loads is methods/parent_merge.py's.

Only runs of methods that can merge and that hold a causal LM can start a stage: a soft prompt,
a prefix or a bottleneck adapter is not part of the base's weights, and a classifier or reward
model does not write text. `problem()` says so before anything loads (`llmtune validate`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from llmtune.errors import UserError
from llmtune.models.run_source import is_run_dir

if TYPE_CHECKING:
    from llmtune.methods.base import Method



@dataclass(frozen=True)
class ParentRun:
    path: Path
    recipe: dict
    """The run's resolved recipe.yaml."""
    method: "Method"

    @property
    def task(self) -> str:
        return self.recipe["data"]["task"]

    @property
    def model(self) -> dict:
        return self.recipe["model"]

    @property
    def final(self) -> Path:
        return self.path / "final"

    def manifest(self) -> dict:
        try:
            return json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError):
            return {}


def read(run_dir: str | Path) -> ParentRun:
    from llmtune.methods.registry import get_method, method_for

    path = Path(run_dir).expanduser().absolute()
    try:
        recipe = yaml.safe_load((path / "recipe.yaml").read_text())
        config = get_method(recipe["method"]["name"]).Config.model_validate(recipe["method"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise UserError(f"model.name {str(run_dir)!r}: the run's recipe.yaml cannot be read back ({exc}); "
                        f"name a run that `llmtune train` finished") from None
    return ParentRun(path, recipe, method_for(config))


def problem(run_dir: str | Path) -> str | None:
    """Why this run cannot start another stage, or None."""
    from llmtune.methods.registry import all_methods

    parent = read(run_dir)
    name = parent.method.name
    writes_text = [n for n, m in sorted(all_methods().items()) if m.can_merge and n not in ("frozen-head",
                                                                                             "linear-probe", "reward")]
    works = (f"what works: a run of a method that merges into its base and writes text ({', '.join(writes_text)}), "
             f"or `llmtune export` this run and prompt it as it is")
    if not parent.method.can_merge:
        return (f"{parent.path} trained method {name!r}, which cannot be merged into its base weights (what it "
                f"learned is not part of them), so a later stage cannot start from it; {works}")
    kind = parent.method.result_kind(parent.task)
    if kind != "causal_lm":
        return f"{parent.path} holds a {kind} ({name} on {parent.task}), not a causal LM to train further; {works}"
    return None


def prompt_format(name: str) -> tuple[str, str | None] | None:
    """How a parent run rendered its prompts: ("chat" | "plain" | "text", its prompt template
    for "plain"); None when `name` is not a run."""
    if not is_run_dir(name):
        return None
    parent = read(name)
    manifest = parent.manifest()
    data = parent.recipe["data"]
    if isinstance(manifest.get("prompt_format"), dict):  # an RL run records what it rendered
        recorded = manifest["prompt_format"]
        return recorded["style"], recorded.get("template")
    style = (manifest.get("data_summary") or {}).get("prompt_style") or \
        ("plain" if data.get("prompt_style") == "plain" else "chat")
    return style, data.get("prompt_template") if style == "plain" else None


def recipe_prompt_format(recipe) -> tuple[str, str | None]:
    """How a recipe's text prompts (online RL) are rendered: data.prompt_style `chat` or `plain`
    as asked; `auto`: as the parent run rendered its prompts when model.name is a run, else
    the text as it is."""
    d = recipe.data
    if d.prompt_style == "chat":
        return "chat", None
    if d.prompt_style == "plain":
        return "plain", d.prompt_template
    return prompt_format(recipe.model.name) or ("text", None)
