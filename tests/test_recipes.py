"""Every shipped recipe validates, and the generated recipe reference is current."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmtune.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p for p in (ROOT / "recipes").rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def test_recipes_exist():
    assert len(SHIPPED) > 0


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_recipe_validates(path):
    loaded = load_recipe(path)
    assert loaded.recipe.method.name


def test_recipe_reference_is_current():
    from llmtune.recipe.reference import render_reference

    doc = ROOT / "docs" / "recipe-reference.md"
    assert doc.read_text() == render_reference(), (
        "docs/recipe-reference.md is stale: run `llmtune schema --markdown > docs/recipe-reference.md`")
