"""The model a prompted evaluation scores: a causal LM, whatever `data.task` says. Built the
same way for `llmtune eval` (a recipe, or a run that trained a causal LM) and for the
`in-context` method's run; encoders are refused with what would work instead."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmtune.errors import UserError

if TYPE_CHECKING:
    from llmtune.recipe.schema import RecipeBase

# Encoder-only architectures: loadable as "causal LMs" by transformers, but they never
# learnt to continue text, so label scoring on them would be noise.
ENCODER_ONLY = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta",
                          "deberta-v2", "mpnet", "camembert", "modernbert"})
BUILTIN_ENCODERS = ("minilm", "tiny-bert")


def as_causal(recipe: RecipeBase) -> RecipeBase:
    """The recipe with `data.task: causal_lm`: what builds the model a prompt is scored by."""
    return recipe.model_copy(update={"data": recipe.data.model_copy(update={"task": "causal_lm"})})


def refuse_an_encoder_name(recipe: RecipeBase) -> None:
    """Before anything loads: a built-in encoder cannot be prompted."""
    name = recipe.model.name
    if name in BUILTIN_ENCODERS:
        raise UserError(f"model.name {name!r} is an encoder; prompting (eval.shots, eval.templates, "
                        f"eval.verbalizers, method in-context) needs a causal LM such as tiny-llama, "
                        f"smollm2-135m or a hub decoder")


def refuse_an_encoder(recipe: RecipeBase, body: Any) -> None:
    """After loading: an encoder architecture cannot be prompted, whatever its name."""
    model_type = getattr(body.config, "model_type", None)
    if model_type in ENCODER_ONLY:
        raise UserError(f"model.name {recipe.model.name!r} is an encoder ({model_type}); prompting needs a causal LM")
