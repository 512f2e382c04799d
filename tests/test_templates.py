"""Prompt templates: sandboxed Jinja over a row's fields, checked at validate time, and
compared with each other by `llmtune eval`."""

from __future__ import annotations

import json

import pytest

from llmtune.errors import UserError
from llmtune.evaluate.templates import compile_templates, default_template, query_fields
from llmtune.recipe.schema import DataSection


pytestmark = pytest.mark.usefixtures("one_thread")


def _cls_cfg(**columns):
    return DataSection(task="classification", train="x.tsv", columns={"text": "sentence", **columns})


def test_fields_are_the_row_columns_plus_canonical_names_without_the_answer():
    fields = query_fields({"sentence": "a fine film", "label": "1", "source": "imdb"}, _cls_cfg())
    assert fields == {"sentence": "a fine film", "source": "imdb", "text": "a fine film"}
    sft = DataSection(task="sft", train="x.json")
    f = query_fields({"instruction": "Add.", "output": "4"}, sft)
    assert f == {"instruction": "Add.", "input": ""}


def test_render_and_defaults():
    (t,) = compile_templates(["Review: {{ sentence }}{% if source %} ({{ source }}){% endif %}\nSentiment:"])
    fields = query_fields({"sentence": "great", "label": "1", "source": "imdb"}, _cls_cfg())
    assert t.render(fields, "row 1") == "Review: great (imdb)\nSentiment:"
    assert default_template(_cls_cfg()).render(fields, "row 1") == "Text: great\nLabel:"
    sft = DataSection(task="sft", train="x.json")
    alpaca = default_template(sft).render({"instruction": "Add 2 and 2.", "input": ""}, "row 1")
    assert alpaca == "### Instruction:\nAdd 2 and 2.\n\n### Response:\n"


def test_unknown_field_and_withheld_answer_name_the_template_and_row():
    t0, t1 = compile_templates(["{{ sentense }}", "{{ text }} -> {{ label }}"])
    fields = query_fields({"sentence": "fine", "label": "1"}, _cls_cfg())
    with pytest.raises(UserError, match=r"eval.templates\[0\]: 'sentense' is undefined for train.tsv:7"):
        t0.render(fields, "train.tsv:7")
    with pytest.raises(UserError, match=r"eval.templates\[1\]: 'label' is undefined.*answer column is withheld"):
        t1.render(fields, "train.tsv:7")


@pytest.mark.parametrize("source", [
    "{{ text.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('echo hacked') }}",
    "{{ text.format.__globals__ }}",
])
def test_templates_run_in_a_sandbox(source, capfd):
    (t,) = compile_templates([source])
    with pytest.raises(UserError, match=r"eval.templates\[0\]"):
        t.render({"text": "hi"}, "row 1")
    assert "hacked" not in capfd.readouterr().out


def test_bad_templates_and_boolean_verbalizers_fail_validation_with_lines(cli, write_recipe, tmp_path):
    (tmp_path / "t.tsv").write_text("sentence\tlabel\nfine\t1\n")
    recipe = write_recipe(
        "model: {name: tiny-llama}\n"
        "data: {task: classification, train: t.tsv, columns: {text: sentence}}\n"
        "method: {name: lora}\n"
        "eval:\n"
        "  templates:\n"
        "    - 'Review: {{ sentence }}'\n"
        "    - 'Review: {{ sentence }'\n"
        "  verbalizers: {0: no, 1: 'yes'}\n"
    )
    res = cli("validate", recipe)
    assert res.code == 2
    assert "eval.templates.1" in res.err and ":7" in res.err and "not a valid Jinja template" in res.err
    assert "quote the word" in res.err


def test_schema_accepts_integer_label_keys_and_string_demos():
    from llmtune.recipe.schema import EvalSection

    e = EvalSection(verbalizers={0: "terrible", 1: "great"}, demos="pool.jsonl", shots=2)
    assert e.verbalizers == {"0": "terrible", "1": "great"} and e.demos.path == "pool.jsonl"
    assert e.prompting and not EvalSection().prompting


def _train_sentiment_model(out_dir, pairs, steps=80):
    """A tiny Llama that learnt `Review: <text>\\nSentiment: <word>` for the given pairs."""
    import torch

    from llmtune.models.builtin import build_tiny, load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    model = build_tiny("tiny-llama", "causal_lm")
    texts = [f"Review: {text}\nSentiment: {word}" for text, word in pairs]
    enc = tok(texts, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


@pytest.mark.slow
def test_eval_ranks_the_clearly_better_template_first(tmp_path, cli, write_recipe):
    rows = [("a good film", "pos"), ("a bad film", "neg"), ("good fun", "pos"), ("bad acting", "neg")]
    words = {"pos": "positive", "neg": "negative"}
    model_dir = _train_sentiment_model(tmp_path / "model", [(t, words[y]) for t, y in rows])
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"review": t, "y": y}) + "\n" for t, y in rows))
    blind = "Review:\nSentiment:"  # never shows the text: one answer for every row, at most 50%
    seeing = "Review: {{ review }}\nSentiment:"  # the format the model learnt
    recipe = write_recipe({
        "model": {"name": str(model_dir)},
        "data": {"task": "classification", "train": "rows.jsonl", "eval": "rows.jsonl",
                 "columns": {"text": "review", "label": "y"}, "labels": ["neg", "pos"]},
        "method": {"name": "in-context"},
        "eval": {"verbalizers": words, "templates": [blind, seeing]},
    })
    res = cli("eval", recipe, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    ranking = [(t["index"], t["accuracy"]) for t in out["templates"]]
    assert ranking[0] == (1, 1.0) and ranking[1][0] == 0 and ranking[1][1] <= 0.5
    best = out["best_template"]
    assert {k: best[k] for k in ("index", "template", "metric", "value")} == {
        "index": 1, "template": seeing, "metric": "accuracy", "value": 1.0}
    # Chosen on some rows, reported on the others (4 rows in all).
    assert best["selection_rows"] + best["rows"] == 4 and best["optimistic"] is False
    assert out["accuracy"] == 1.0 and out["examples"] == best["rows"]  # the best template's held-out scores
    table = cli("eval", recipe)
    assert table.code == 0, table.err
    # The table lists the better template first (the blind one shows as one line, \n escaped).
    assert table.out.index("Review: {{ review") < table.out.index("Review:\\nSentiment:")
