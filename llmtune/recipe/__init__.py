"""Recipes: YAML with line marks -> pydantic schema -> a resolved, validated Recipe."""

from llmtune.recipe.load import load_recipe, recipe_from_dict
from llmtune.recipe.schema import Recipe

__all__ = ["Recipe", "load_recipe", "recipe_from_dict"]
