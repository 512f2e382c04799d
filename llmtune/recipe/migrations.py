"""Recipe keys and forms that changed. An old recipe is refused (exit 2) with what to write
instead, never read another way in silence; each entry says when and why it changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmtune.recipe.local_paths import Problem

if TYPE_CHECKING:
    from llmtune.methods.base import Method
    from llmtune.recipe.schema import RecipeBase

RENAMED = {
    ("train", "fused_lora"): (("train", "fused_forward"),
                              "the switch now asks any method for its fused forward; LoRA's is the one there is"),
}
"""Old key path -> (new key path, why). Since issue 27 (the fused LoRA forward moved to the LoRA method)."""


def migrate(raw: dict, source: str) -> list[str]:
    """For a recipe llmtune wrote itself (a run's resolved recipe.yaml): every renamed key is
    read under its new name, so a finished run stays usable; returns a one-line notice each."""
    notices = []
    for (section, key), (new, _why) in RENAMED.items():
        parent = raw.get(section)
        if isinstance(parent, dict) and key in parent:
            value = parent.pop(key)
            target = raw.setdefault(new[0], {})
            if isinstance(target, dict):
                target.setdefault(new[1], value)
            notices.append(f"{source}: {section}.{key} is now {'.'.join(new)}; read as such")
    return notices


def old_form_problems(raw: dict) -> list[Problem]:
    """Problems for every old key in `raw`, which is taken out so it is not also reported as unknown."""
    problems: list[Problem] = []
    for (section, key), (new, why) in RENAMED.items():
        parent = raw.get(section)
        if isinstance(parent, dict) and key in parent:
            value = parent.pop(key)
            problems.append(((section, key), f"renamed: write `{'.'.join(new)}: {_yaml(value)}` instead ({why})"))
    return problems


def _yaml(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def prompted_classifier_problems(recipe: RecipeBase, method: Method) -> list[Problem]:
    """A classification recipe that prompts (eval.shots, eval.templates, eval.verbalizers) but
    names a method that trains a classifier head, which no prompt can score. Until issue 27 a
    prompted recipe named a training method it never used (`method: {name: lora}  # not
    used`); now it says what it does: `method: {name: in-context}`."""
    task = recipe.data.task
    if task != "classification" or not recipe.eval.prompting or method.result_kind(task) != "classifier":
        return []
    name = recipe.method.name
    return [(("method", "name"),
             f"eval.shots/eval.templates/eval.verbalizers score a causal LM by prompting, but method {name!r} "
             f"trains a classification head, which prompts cannot score. To prompt with nothing trained (what a "
             f"prompted recipe with an unused method meant before), write `method: {{name: in-context}}`; to "
             f"train {name!r}, remove the prompting keys from `eval`")]
