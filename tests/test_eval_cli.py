"""`llmtune eval`: the JSON output's shape, --limit, generation on sft rows, runs and errors."""

from __future__ import annotations

import json

import pytest

from conftest import DATA


pytestmark = pytest.mark.usefixtures("one_thread")


def _sft_recipe(write_recipe, **eval_section):
    return write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "sft", "train": str(DATA / "alpaca_tiny.json"), "eval_fraction": 0.1, "max_length": 128},
        "method": {"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
        "train": {"max_steps": 2, "batch_size": 4},
        "eval": {"generation": {"max_new_tokens": 4}, **eval_section},
    })


def test_classification_json_schema_and_limit(cli, write_recipe, tmp_path):
    lines = (DATA / "sst2_dev.tsv").read_text().splitlines()[:21]
    (tmp_path / "dev.tsv").write_text("\n".join(lines) + "\n")
    recipe = write_recipe({
        "model": {"name": "tiny-bert"},
        "data": {"task": "classification", "train": "dev.tsv", "eval": "dev.tsv",
                 "columns": {"text": "sentence"}, "labels": ["negative", "positive"]},
        "method": {"name": "lora", "target_modules": ["query", "value"]},
    })
    res = cli("eval", recipe, "--json", "--limit", "7")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert {"target", "task", "method", "split", "accuracy", "macro_f1", "per_class", "confusion_matrix",
            "examples"} <= set(out)
    assert out["task"] == "classification" and out["split"] == "eval" and out["examples"] == 7
    assert sum(map(sum, out["confusion_matrix"])) == 7
    assert set(out["per_class"]) == {"negative", "positive"}
    assert set(out["per_class"]["positive"]) == {"precision", "recall", "f1", "support"}


def test_sft_generation_scores_and_limit(cli, write_recipe):
    recipe = _sft_recipe(write_recipe)
    res = cli("eval", recipe, "--json", "--limit", "3")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert {"loss", "perplexity", "tokens", "exact_match", "f1", "generated", "samples", "prompting"} <= set(out)
    assert out["generated"] == 3 and out["prompts"] == 3 and len(out["samples"]) == 3
    assert 0.0 <= out["f1"] <= 1.0 and 0.0 <= out["exact_match"] <= out["f1"] + 1e-9
    sample = out["samples"][0]
    # Alpaca rows on a model with a chat template are prompted through it, as training renders them.
    assert sample["prompt"].startswith("<s>user\n") and sample["prompt"].endswith("<s>assistant\n")
    assert out["prompting"]["shots"] == 0
    res = cli("eval", recipe, "--json", "--limit", "3", "--set", "eval.generate=false")
    out = json.loads(res.out)
    assert "loss" in out and "exact_match" not in out


def test_sft_table_shows_generation_samples(cli, write_recipe):
    res = cli("eval", _sft_recipe(write_recipe), "--limit", "2")
    assert res.code == 0, res.err
    assert "exact_match" in res.out and "perplexity" in res.out and "--- reference:" in res.out


def test_chat_rows_generate_zero_shot_and_refuse_demos(cli, write_recipe, tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}
            for w in ("hello", "goodbye", "yes", "no")]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "sft", "train": "chat.jsonl", "eval": "chat.jsonl"},
        "method": {"name": "lora"},
        "eval": {"generation": {"max_new_tokens": 3}},
    })
    res = cli("eval", recipe, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["generated"] == 4 and out["samples"][0]["reference"] == "hello"
    assert out["samples"][0]["prompt"].endswith("<s>assistant\n")  # the chat template's generation prompt
    res = cli("eval", recipe, "--set", "eval.shots=1")
    assert res.code == 2 and "chat rows" in res.err


def test_prompting_errors_are_user_errors(cli, write_recipe, tmp_path):
    (tmp_path / "t.tsv").write_text("sentence\tlabel\nfine\t1\nbad\t0\n")
    encoder = write_recipe({
        "model": {"name": "tiny-bert"},
        "data": {"task": "classification", "train": "t.tsv", "columns": {"text": "sentence"}, "eval_fraction": 0},
        "method": {"name": "in-context"},
        "eval": {"shots": 0},
    }, name="encoder.yaml")
    res = cli("eval", encoder)
    assert res.code == 2 and "is an encoder" in res.err and "Traceback" not in res.err
    (tmp_path / "lm.txt").write_text("some text\nmore text\n")
    lm = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "causal_lm", "train": "lm.txt", "eval_fraction": 0},
        "method": {"name": "lora"},
        "eval": {"shots": 1},
    }, name="lm.yaml")
    res = cli("eval", lm)
    assert res.code == 2 and "classification and sft" in res.err
    big_k = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "classification", "train": "t.tsv", "eval": "t.tsv", "columns": {"text": "sentence"}},
        "method": {"name": "in-context"},
        "eval": {"shots": 5},
    }, name="k.yaml")
    res = cli("eval", big_k)
    assert res.code == 2 and "only 2 distinct rows" in res.err
    bad_word = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "classification", "train": "t.tsv", "eval": "t.tsv", "columns": {"text": "sentence"}},
        "method": {"name": "in-context"},
        "eval": {"verbalizers": {"1": "good"}},
    }, name="v.yaml")
    res = cli("eval", bad_word)
    assert res.code == 2 and "no word for label '0'" in res.err


@pytest.mark.slow
def test_few_shot_eval_of_a_trained_run_writes_eval_json(cli, write_recipe, tmp_path):
    recipe = _sft_recipe(write_recipe)
    run = tmp_path / "run"
    res = cli("train", recipe, "--output", run)
    assert res.code == 0, res.err
    res = cli("eval", run, "--json", "--limit", "2", "--set", "eval.shots=2",
              "--set", "eval.generation.stop=['###']")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert json.loads((run / "eval.json").read_text()) == out
    assert out["generated"] == 2 and out["prompting"]["shots"] == 2 and out["prompting"]["selection"] == "random"
    # Demonstrations come from the training split: each prompt holds two solved examples.
    for sample in out["samples"]:
        assert sample["prompt"].count("### Instruction:") == 1 + sample["demos"]
    assert out["mean_demos"] == 2 - out["demos_dropped"] / 2
    assert "###" not in "".join(s["output"] for s in out["samples"])
