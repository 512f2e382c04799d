"""`Recipe` with every method's options: the recipe schema as a whole, for `llmtune schema`,
the generated reference and a recipe whose method name is not one llmtune has (its errors
list the names that exist). Importing it imports every method module; reading a recipe of
a known method does not need it (schema.recipe_model)."""

from __future__ import annotations

from llmtune.recipe.schema import RecipeBase, method_union


class Recipe(RecipeBase):
    method: method_union()  # type: ignore[valid-type]
    """How the model is finetuned: `method.name` picks one of `llmtune methods`, the
    other keys are that method's options."""
