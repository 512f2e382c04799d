"""Recipe keys and forms that changed. An old recipe is refused (exit 2) with what to write
instead, never read another way in silence; each entry says when and why it changed."""

from __future__ import annotations

from llmtune.recipe.local_paths import Problem

RENAMED = {
    ("train", "fused_lora"): (("train", "fused_forward"),
                              "the switch now asks any method for its fused forward; LoRA's is the one there is"),
}
"""Old key path -> (new key path, why). Since issue 27 (the fused LoRA forward moved to the LoRA method)."""


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
