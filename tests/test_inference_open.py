"""Opening something for inference (llmtune.runs.inference) without a trained run: a model
name, a recipe (its base model); what is not a causal LM is refused with the verb that fits.
(Runs of every causal method: tests/test_chat_generate.py.)"""

from __future__ import annotations

import pytest

from llmtune.errors import UserError
from llmtune.generation.params import Request, SamplingParams
from llmtune.runs.inference import CAUSAL_LM, ENCODER, identify, open_causal_lm

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_model_name_opens_with_its_chat_template_context_and_stop_tokens():
    lm = open_causal_lm("tiny-llama", verb="chat")
    assert identify("tiny-llama").kind == CAUSAL_LM
    assert lm.prompt_format.style == "chat" and lm.context_length == 512
    assert lm.tokenizer.eos_token_id in lm.engine.stop_token_ids
    ids = lm.prompt_ids([{"role": "user", "content": "Hi"}])
    out = lm.engine.complete([Request(ids, SamplingParams(max_new_tokens=4))])[0]
    assert out.prompt_tokens == len(ids) and 1 <= len(out.token_ids) <= 4


def test_an_encoder_is_refused_naming_what_fits():
    assert identify("tiny-bert").kind == ENCODER
    with pytest.raises(UserError, match="tiny-bert: holds an encoder, not a causal LM") as err:
        open_causal_lm("tiny-bert", verb="generate")
    assert "llmtune embed" in str(err.value) and "`llmtune generate`" in str(err.value)


def test_a_recipe_opens_its_base_model_prompted_as_it_would_train(write_recipe):
    from conftest import DATA

    plain = write_recipe({"model": {"name": "tiny-llama"},
                          "data": {"task": "sft", "train": str(DATA / "alpaca_tiny.json"), "prompt_style": "plain"},
                          "method": {"name": "lora"}})
    lm = open_causal_lm(plain, verb="chat")
    assert lm.prompt_format.style == "plain" and lm.method is None
    raw = write_recipe({"model": {"name": "tiny-gpt2"}, "data": {"task": "causal_lm",
                                                              "train": str(DATA / "alpaca_tiny.json")},
                        "method": {"name": "full"}}, "raw.yaml")
    assert open_causal_lm(raw, verb="chat").prompt_format.style == "text"


def test_an_unknown_folder_or_hub_id_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        open_causal_lm(str(tmp_path / "nowhere"), verb="chat")


def test_a_recorded_prompt_format_wins(write_recipe):
    """RL runs record how they rendered prompts (manifest prompt_format): chat and generate
    render the same way."""
    from conftest import DATA

    from llmtune.models.load import load_tokenizer
    from llmtune.recipe.load import load_recipe
    from llmtune.runs.inference import prompt_format

    recipe = load_recipe(write_recipe({"model": {"name": "tiny-llama"}, "method": {"name": "lora"},
                                       "data": {"task": "sft", "train": str(DATA / "alpaca_tiny.json")}})).recipe
    tok = load_tokenizer("tiny-llama")
    assert prompt_format(recipe, {}, tok).style == "chat"
    recorded = {"prompt_format": {"style": "plain", "template": "Q: {instruction}\nA:"}}
    fmt = prompt_format(recipe, recorded, tok)
    assert (fmt.style, fmt.template) == ("plain", "Q: {instruction}\nA:")
    assert tok.decode(fmt.render(tok, [{"role": "user", "content": "Hi"}])) == "Q: Hi\nA:"
