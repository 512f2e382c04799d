"""`llmtune preview` on the bundled data for every task: the mask markers, the counts, virtual
tokens, the memory estimate's parameter counts, --time, and that nothing is written."""

from __future__ import annotations

import json
import os

import pytest

from conftest import DATA, RECIPES

pytestmark = pytest.mark.usefixtures("one_thread", "own_cache")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A tokenized-data cache of this test's own (the session's is shared), to see that
    preview never writes one."""
    monkeypatch.setenv("LLMTUNE_CACHE", str(tmp_path / "llmtune-cache"))

TASKS = {
    "sft": "tiny-llama-sft.yaml",
    "classification": "sst2-lora.yaml",
    "preference": "dpo-tiny-hh.yaml",
    "unpaired_preference": "kto-tiny-demo.yaml",
    "prompts": "rl-tiny-rule.yaml",
}
LIMIT = ["--set", "data.train.limit=24"]


def _preview_json(cli, recipe, *args):
    res = cli("preview", recipe, "--json", *args)
    assert res.code == 0, res.err
    return json.loads(res.out)


def _nothing_written(tmp_path):
    cache = os.environ["LLMTUNE_CACHE"]
    assert not os.path.exists(cache) or not any(os.scandir(cache)), "preview wrote to the tokenized cache"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_shows_its_mask_and_counts(task, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _preview_json(cli, RECIPES / TASKS[task], "-n", "2", *LIMIT)
    assert out["task"] == task and out["shown"] == len(out["examples"]) == 2
    seqs = [s for ex in out["examples"] for s in ex["sequences"]]
    for s in seqs:
        assert len(s["tokens"]) == s["length"]
        flags = [t["train"] for t in s["tokens"]]
        assert s["trained_tokens"] == (None if flags[0] is None else sum(flags))
    first = seqs[0]
    trained_text = "".join(t["text"] for t in first["tokens"] if t["train"])
    if task == "sft":  # alpaca rows through tiny-llama's chat template: the response and its end token
        assert not first["tokens"][0]["train"] and trained_text.endswith("</s>")
        assert "user" not in trained_text and "chat template" in out["rendering"]
    elif task == "classification":
        assert first["trained_tokens"] is None and first["label"] in ("0 (negative)", "1 (positive)")
        assert first["tokens"][0] == {"id": 101, "text": "[CLS]", "train": None, "special": True}
    elif task == "preference":  # chosen and rejected share the untrained prompt
        chosen, rejected = out["examples"][0]["sequences"]
        assert (chosen["title"], rejected["title"]) == ("chosen", "rejected")
        start = [t["train"] for t in chosen["tokens"]].index(True)
        assert [t["id"] for t in chosen["tokens"][:start]] == [t["id"] for t in rejected["tokens"][:start]]
        assert "Assistant:" in "".join(t["text"] for t in chosen["tokens"][:start])
    elif task == "unpaired_preference":
        assert first["label"] in ("desirable", "undesirable") and 0 < first["trained_tokens"] < first["length"]
    else:  # prompts only: nothing of them trains
        assert first["title"] == "prompt" and first["trained_tokens"] is None and "online RL" in out["notes"][0]
    lengths = out["lengths"]
    assert lengths["sequences"] == out["examples_in_split"] * len(out["examples"][0]["sequences"])
    assert lengths["min"] <= lengths["median"] <= lengths["p95"] <= lengths["max"]
    assert out["tokens"]["per_epoch"] == lengths["tokens"] and out["tokens"]["steps"] > 0
    m = out["memory"]
    assert 0 < m["trainable_parameters"] <= m["total_parameters"] and m["total_mib"] > m["weights_mib"] > 0
    _nothing_written(tmp_path)


def test_plain_output_marks_trained_tokens_and_special_tokens(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = cli("preview", RECIPES / "tiny-llama-sft.yaml", "-n", "1", *LIMIT)
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert any(line.startswith("legend: tokens are separated by |") for line in lines)
    head = next(i for i, line in enumerate(lines) if line.startswith("--- example 1: "))
    n_tokens, n_trained = [int(w) for w in lines[head].replace(",", "").split() if w.isdigit()][:2]
    tokens = lines[head + 1].split("|")
    assert len(tokens) == n_tokens and tokens[0] == "«<s>»"
    start = next(i for i, t in enumerate(tokens) if t.startswith("[["))
    end = next(i for i, t in enumerate(tokens) if t.endswith("]]"))
    assert end - start + 1 == n_trained and tokens[start - 1] == "\\n" and tokens[end] == "«</s>»]]"
    assert "sequence length (min / median / p95 / max)" in res.out and "memory: estimated total" in res.out


def test_virtual_tokens_are_shown_as_such(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    soft = _preview_json(cli, RECIPES / "sst2-soft-prompt.yaml", "-n", "1", *LIMIT)
    plain = _preview_json(cli, RECIPES / "sst2-lora.yaml", "-n", "1", *LIMIT)
    assert soft["virtual_tokens"] == {"where": "input", "count": 20}
    assert soft["lengths"]["max"] == plain["lengths"]["max"] + 20
    res = cli("preview", RECIPES / "sst2-prefix.yaml", "-n", "1", *LIMIT)
    assert res.code == 0 and "prefix: 20 learned key/value positions in front of every attention layer" in res.out
    res = cli("preview", RECIPES / "sst2-soft-prompt.yaml", "-n", "1", *LIMIT)
    assert "|".join(["«20 virtual tokens»", "«[CLS]»"]) in res.out


@pytest.mark.parametrize("method", [{"name": "lora", "r": 4}, {"name": "soft-prompt", "num_virtual_tokens": 5},
                                    {"name": "prefix", "num_virtual_tokens": 3}, {"name": "ia3"}],
                         ids=lambda m: m["name"])
def test_weightless_counts_match_the_real_model(method):
    from llmtune.methods.registry import get_method
    from llmtune.models.build import build_task_model
    from llmtune.models.builtin import load_tiny_tokenizer
    from llmtune.preview.memory import model_shape
    from llmtune.recipe.full_schema import Recipe

    recipe = Recipe.model_validate({"model": {"name": "tiny-llama"}, "data": {"task": "sft", "train": "x.json"},
                                    "method": method})
    m = get_method(method["name"])(recipe.method)
    real = build_task_model(recipe, None)
    from llmtune.train.assemble import prepare_for_training

    prepare_for_training(real, m)
    shape = model_shape(recipe, m, None, load_tiny_tokenizer())
    assert (shape.trainable, shape.total) == real.trainable_parameters()


def test_time_measures_real_steps(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sft = _preview_json(cli, RECIPES / "tiny-llama-sft.yaml", "-n", "0", "--time", *LIMIT)
    t = sft["time"]
    assert t["timed_steps"] == 3 and t["seconds_per_step"] > 0 and t["steps_per_epoch"] == 3  # 21 rows / batch 8
    assert t["seconds_per_epoch"] == pytest.approx(t["seconds_per_step"] * 3, abs=0.11)
    # The step `train` runs: its speed switches on (LoRA's fused forward, the CPU dropout masks).
    assert t["speed_features"]["fused_forward"] > 0 and t["speed_features"]["fast_dropout"] > 0, t
    dpo = _preview_json(cli, RECIPES / "dpo-tiny-hh.yaml", "-n", "0", "--time", *LIMIT)
    # reference log-probabilities precomputed (the default): no reference forward in a step
    assert dpo["time"]["seconds_per_step"] > 0 and "reference" not in dpo["time"]["what"]
    dpo = _preview_json(cli, RECIPES / "dpo-tiny-hh.yaml", "-n", "0", "--time", *LIMIT,
                        "--set", "method.precompute_ref_log_probs=false")
    assert "reference" in dpo["time"]["what"]
    rl = _preview_json(cli, RECIPES / "rl-tiny-rule.yaml", "-n", "0", "--time", *LIMIT)
    assert "not timed" in rl["time"]["skipped"]
    _nothing_written(tmp_path)


def test_eval_split_without_eval_rows_is_a_user_error(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = cli("preview", RECIPES / "tiny-llama-sft.yaml", "--split", "eval", "--set", "data.eval_fraction=0", *LIMIT)
    assert res.code == 2 and "no eval examples" in res.err
    res = cli("preview", RECIPES / "tiny-llama-sft.yaml", "--split", "test")
    assert res.code == 2


def test_causal_lm_trains_on_every_token(cli, write_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe({"model": {"name": "tiny-gpt2"},
                           "data": {"task": "causal_lm", "train": str(DATA / "alpaca_tiny.json"),
                                    "columns": {"text": "output"}, "max_length": 32},
                           "method": {"name": "full"}})
    out = _preview_json(cli, recipe, "-n", "1", *LIMIT)
    [seq] = out["examples"][0]["sequences"]
    assert seq["trained_tokens"] == seq["length"] <= 32 and out["rows"]["truncated"] > 0
