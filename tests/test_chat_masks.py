"""Assistant masks that are right or refused: chat templates of the main model families
round-trip (the tokens trained on decode to exactly the assistant turns), templates that
rewrite earlier turns are refused with the row and the fix, and alpaca rows follow
data.prompt_style in training and in eval prompts alike."""

from __future__ import annotations

import json

import pytest

from chat_fixtures import fixture_tokenizer
from llmtune.data.chat_masks import INCREMENTAL, MARKERS, encode_chat
from llmtune.data.encode import IGNORE, EncodeStats, encode_sft
from llmtune.data.readers import Row
from llmtune.errors import DataError
from llmtune.recipe.schema import DataSection

SYSTEM = {"role": "system", "content": "Answer briefly."}
TWO_TURNS = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "Four."},
    {"role": "user", "content": "And 3+3? Show it on two lines."},
    {"role": "assistant", "content": "3+3\n= six"},
]
# fixture -> (text before each assistant content, text after it, how the mask is found)
FAMILIES = {
    "chatml": ("", "<|im_end|>\n", INCREMENTAL),
    "chatml_generation": ("", "<|im_end|>", MARKERS),
    "llama3": ("", "<|eot_id|>", INCREMENTAL),
    "gemma": ("", "<end_of_turn>\n", INCREMENTAL),
    "mistral": (" ", "</s>", INCREMENTAL),
    "qwen3": ("", "<|im_end|>\n", INCREMENTAL),
}


def _trained_spans(enc, tok) -> list[str]:
    spans, run = [], []
    for token, trains in zip(enc.ids + [None], enc.trains + [False]):
        if trains:
            run.append(token)
        elif run:
            spans.append(tok.decode(run, skip_special_tokens=False))
            run = []
    return spans


def _sft_cfg(**kw):
    return DataSection.model_validate({"task": "sft", "train": {"path": "x"}, "max_length": 512, **kw})


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("system", [False, True], ids=["no-system", "system"])
def test_each_family_round_trips_exactly(family, system):
    tok = fixture_tokenizer(family)
    before, after, source = FAMILIES[family]
    msgs = ([SYSTEM] if system else []) + TWO_TURNS
    enc = encode_chat(msgs, tok, "chat.jsonl:1")
    assert enc.source == source
    assert _trained_spans(enc, tok) == [before + m["content"] + after for m in msgs if m["role"] == "assistant"]
    # The ids are the whole conversation as the template renders it, nothing added or lost.
    assert tok.decode(enc.ids, skip_special_tokens=False) == tok.apply_chat_template(msgs, tokenize=False)


def test_qwen3_style_keeps_final_reasoning_and_refuses_dropped_reasoning():
    tok = fixture_tokenizer("qwen3")
    final = {"role": "assistant", "content": "<think>\n2 and 2 make 4\n</think>\n\nFour."}
    enc = encode_chat([TWO_TURNS[0], final], tok, "chat.jsonl:1")
    assert _trained_spans(enc, tok) == [final["content"] + "<|im_end|>\n"]
    # An earlier turn's reasoning is dropped once a later user turn exists: slicing the
    # renderings would train on text that is not the conversation (the defect in issue 12).
    earlier = [TWO_TURNS[0], final, TWO_TURNS[2], TWO_TURNS[3]]
    with pytest.raises(DataError) as err:
        encode_chat(earlier, tok, "chat.jsonl:7")
    msg = str(err.value)
    assert msg.startswith("chat.jsonl:7: ") and "messages 1-3" in msg and "<think>" in msg
    assert "{% generation %}" in msg and "one row per assistant turn" in msg


def test_template_without_generation_prompt_is_refused_not_trained_on_the_header():
    tok = fixture_tokenizer("chatml_no_generation_prompt")
    with pytest.raises(DataError) as err:
        encode_chat(TWO_TURNS, tok, "chat.jsonl:3")
    assert "'<|im_start|>assistant\\nFour.'" in str(err.value) and "'Four.'" in str(err.value)


def test_wrong_generation_markers_fall_back_to_verified_renderings():
    tok = fixture_tokenizer("chatml_bad_markers")
    stats = EncodeStats()
    [ex] = encode_sft([Row({"messages": TWO_TURNS}, "chat.jsonl:1")], tok, _sft_cfg(), stats)
    trained = tok.decode([i for i, y in zip(ex["input_ids"], ex["labels"]) if y != IGNORE])
    assert trained == "Four.<|im_end|>\n3+3\n= six<|im_end|>\n"
    assert stats.markers_failed == 1 and stats.assistant_masks == {INCREMENTAL: 1}


def test_refused_chat_row_ends_training_with_exit_2_naming_the_row(cli, write_recipe, tmp_path):
    from transformers import AutoModelForCausalLM

    from llmtune.models.builtin import tiny_config

    # A real model folder (config, weights, tokenizer): validate refuses one without a model in it.
    tok = fixture_tokenizer("qwen3")
    tok.save_pretrained(tmp_path / "qwen3-style")
    AutoModelForCausalLM.from_config(tiny_config("tiny-llama", vocab_size=len(tok))).save_pretrained(
        tmp_path / "qwen3-style")
    good = {"messages": TWO_TURNS[:2]}
    bad = {"messages": [TWO_TURNS[0], {"role": "assistant", "content": "<think>\nadd\n</think>\n\nFour."},
                        *TWO_TURNS[2:]]}
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (good, good, bad, good)))
    recipe = write_recipe({"model": {"name": str(tmp_path / "qwen3-style")},
                           "data": {"task": "sft", "train": "chat.jsonl", "eval_fraction": 0.0},
                           "method": {"name": "lora"}})
    res = cli("train", recipe, "--output", tmp_path / "run")
    assert res.code == 2, res.err
    assert "chat.jsonl:3: cannot find the assistant tokens" in res.err and "Traceback" not in res.err


def test_alpaca_rows_use_the_chat_template_unless_plain(tmp_path):
    from llmtune.models.builtin import load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    row = Row({"instruction": "Greet", "input": "Ana", "output": "Hi Ana"}, "a.json row 1")
    stats = EncodeStats()
    [ex] = encode_sft([row], tok, _sft_cfg(), stats)
    prompt = tok.decode([i for i, y in zip(ex["input_ids"], ex["labels"]) if y == IGNORE])
    trained = tok.decode([i for i, y in zip(ex["input_ids"], ex["labels"]) if y != IGNORE])
    assert prompt == "<s>user\nGreet\n\nAna</s>\n<s>assistant\n" and trained == "Hi Ana</s>"
    assert stats.prompt_style == "chat"
    plain = EncodeStats()
    [ex] = encode_sft([row], tok, _sft_cfg(prompt_style="plain"), plain)
    assert tok.decode(ex["input_ids"]).startswith("### Instruction:\nGreet") and plain.prompt_style == "plain"
    # A prompt_template written in the recipe is meant to be used.
    assert _sft_cfg(prompt_template="Q: {instruction}\nA: ").prompt_style == "plain"
    no_template = fixture_tokenizer("chatml")
    no_template.chat_template = None
    with pytest.raises(DataError, match="prompt_style is chat"):
        encode_sft([row], no_template, _sft_cfg(prompt_style="chat"), EncodeStats())
    [ex] = encode_sft([row], no_template, _sft_cfg(), auto := EncodeStats())
    assert auto.prompt_style == "plain"


def test_eval_prompts_alpaca_rows_the_way_training_renders_them():
    from llmtune.evaluate.icl import _query_text
    from llmtune.evaluate.prompt_rows import sft_rows
    from llmtune.models.builtin import load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    row = Row({"instruction": "Greet", "input": "Ana", "output": "Hi Ana"}, "a.json row 1")
    [query] = sft_rows([row], _sft_cfg(), alpaca_chat=True)
    [ex] = encode_sft([row], tok, _sft_cfg(), EncodeStats())
    trained_prompt = [i for i, y in zip(ex["input_ids"], ex["labels"]) if y == IGNORE]
    assert tok(_query_text(query, None, tok), add_special_tokens=False)["input_ids"] == trained_prompt
