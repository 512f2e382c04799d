"""A classification head on a causal LM that starts from the label words (model.head_init:
label_words) over inputs framed by data.text_template: untrained, it ranks the labels as the
LM ranks their words next; trained, the template reaches eval and llmtune.json."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA


def test_an_untrained_label_word_head_scores_as_the_lm_ranks_the_words():
    import torch

    from llmtune.models.load import load_body, load_tokenizer
    from llmtune.models.task_model import TaskModel, init_head_from_words

    tok, lm = load_tokenizer("tiny-gpt2"), load_body("tiny-gpt2", "sft").eval()
    model = TaskModel(lm.transformer, "classification", num_labels=2, pooling="last").eval()
    ids = init_head_from_words(model, tok, ["good", "bad"], lambda i: lm.get_output_embeddings().weight[i])
    enc = tok(["Review: a fine film\nSentiment:", "Review: dull\nSentiment:"], padding=True, return_tensors="pt")
    with torch.no_grad():
        _, logits = model(enc["input_ids"], enc["attention_mask"])
        full = lm(**enc).logits
    last = enc["attention_mask"].sum(1) - 1
    want = full[torch.arange(2), last][:, ids]
    assert torch.allclose(logits, want, atol=1e-5)


def test_template_and_label_word_head_train_and_are_recorded(cli, write_recipe, tmp_path):
    recipe = write_recipe({
        "model": {"name": "tiny-gpt2", "pooling": "last", "head_init": "label_words"},
        "data": {"task": "classification", "train": {"path": str(DATA / "sst2_train.tsv"), "limit": 32},
                 "eval": {"path": str(DATA / "sst2_dev.tsv"), "limit": 16}, "columns": {"text": "sentence"},
                 "labels": ["negative", "positive"], "text_template": "Review: {text}\nSentiment:"},
        "method": {"name": "lora", "r": 4, "target_modules": ["c_attn"]},
        "train": {"max_steps": 2, "batch_size": 8, "log_every": 1}})
    run = tmp_path / "run"
    res = cli("train", recipe, "-o", run, "--json")
    assert res.code == 0, res.err
    assert "head starts from the output embeddings of 'negative'" in res.err
    info = json.loads((run / "final" / "llmtune.json").read_text())
    assert info["text_template"] == "Review: {text}\nSentiment:"
    evaluated = json.loads(cli("eval", run, "--json").out)
    assert evaluated["examples"] == 16 and evaluated["accuracy"] == json.loads(res.out)["eval"]["accuracy"]


@pytest.mark.parametrize("template, message", [("Review: {sentence}", "use {text}"), ("no field", "use {text}")])
def test_a_template_without_the_text_is_refused(cli, write_recipe, template, message):
    recipe = write_recipe({"model": {"name": "tiny-gpt2"},
                           "data": {"task": "classification", "train": str(DATA / "sst2_train.tsv"),
                                    "text_template": template}, "method": {"name": "lora"}})
    res = cli("validate", recipe)
    assert res.code == 2 and message in res.err and "text_template" in res.err, res.err
