"""Recipes: YAML with line marks -> pydantic schema -> a resolved, validated Recipe."""

from llmtune.recipe.load import load_recipe, recipe_from_dict

__all__ = ["load_recipe", "recipe_from_dict"]
