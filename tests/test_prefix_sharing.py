"""Shared-prefix label scoring: the same scores and predictions as encoding every prompt
whole, with the shared demonstrations encoded once per group."""

from __future__ import annotations

import json

import pytest
import torch

from llmtune.evaluate import icl, prefix_sharing
from llmtune.evaluate.label_scoring import _Row, continuations, score_labels
from llmtune.evaluate.prompt_rows import PromptRow
from llmtune.evaluate.templates import compile_templates
from tests.conftest import DATA

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _sst2_rows(n: int) -> list[PromptRow]:
    lines = (DATA / "sst2_train.tsv").read_text().splitlines()[1:n + 1]
    out = []
    for i, line in enumerate(lines):
        text, label = line.split("\t")
        out.append(PromptRow(text.strip(), {"text": text.strip()}, ["terrible", "great"][int(label)], f"row {i}",
                             label=int(label)))
    return out


def _model(name: str):
    from llmtune.models.builtin import build_tiny
    from tests.tiny_lm import trained_scale

    model = build_tiny(name, "causal_lm").eval()
    trained_scale(model)  # logits that differ between labels, so predictions mean something
    return model


def _pairs(tok, words, sets: int, queries=24, shots=4):
    rows = _sst2_rows(60)
    pool, qs = rows[:36], rows[36:36 + queries]
    ranked = icl.select_random(qs, pool, shots, seed=0, sets=sets)
    style = icl.PromptStyle(compile_templates(["Review: {{ text }}\nSentiment:"])[0], "\n\n", " ", False)
    prompts = icl.build_prompts(qs, pool, ranked, style, tok, budget=1000)
    return continuations(tok, prompts, words, " ", icl.special_prefix(tok))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("words", [["terrible", "great"], ["very bad indeed", "good"]])
def test_shared_prefix_gives_the_plain_scores_and_predictions(name, words):
    from llmtune.models.builtin import load_tiny_tokenizer

    tok, model = load_tiny_tokenizer(), _model(name)
    pairs = _pairs(tok, words, sets=3)
    kw = {"pad_id": tok.pad_token_id, "batch_size": 5, "reduce": "sum", "device": CPU}
    plain = score_labels(model, pairs, **kw)
    stats: dict = {}
    shared = score_labels(model, pairs, share_prefix=True, stats=stats, **kw)
    assert torch.allclose(plain, shared, atol=1e-4), (plain - shared).abs().max()
    assert torch.equal(plain.argmax(1), shared.argmax(1))
    # A random model may favour one label everywhere: the margins must order the prompts alike too.
    margin_plain, margin_shared = plain[:, 1] - plain[:, 0], shared[:, 1] - shared[:, 0]
    assert margin_plain.std() > 0.05
    assert torch.equal(margin_plain.argsort(), margin_shared.argsort())
    # Three demonstration sets: three groups, and most tokens are not encoded again.
    assert stats["groups"] == 3 and stats["rows_sharing"] == stats["rows"]
    # Larger batches: trees of different prefixes share a forward pass, with the same scores.
    wide: dict = {}
    batched = score_labels(model, pairs, share_prefix=True, stats=wide, **{**kw, "batch_size": 32})
    assert wide["forward_passes"] < stats["forward_passes"] and torch.allclose(batched, shared, atol=1e-4)
    assert stats["tokens_encoded"] < stats["tokens_total"] / 2


def test_rows_without_a_long_common_start_are_scored_alone():
    a = _Row(list(range(40)), [(0, 5, 0)])
    b = _Row(list(range(30)) + [99] * 10, [(0, 5, 1)])
    c = _Row([7] * 40, [(0, 5, 2)])
    groups, alone = prefix_sharing.group_rows([a, b, c], min_shared=16)
    assert [(g.length, sorted(g.rows)) for g in groups] == [(30, [0, 1])] and alone == [2]
    # The prefix stops before the first position whose logits score a token.
    d = _Row(list(range(40)), [(3, 5, 0), (2, 6, 0)])
    groups, _ = prefix_sharing.group_rows([a, d], min_shared=16)
    assert groups[0].length == 40 - 1 - 3


def test_a_model_whose_cache_disagrees_falls_back_to_the_plain_path(monkeypatch):
    from llmtune.models.builtin import load_tiny_tokenizer

    tok, model = load_tiny_tokenizer(), _model("tiny-llama")
    pairs = _pairs(tok, ["terrible", "great"], sets=2, queries=8)
    kw = {"pad_id": tok.pad_token_id, "batch_size": 4, "reduce": "sum", "device": CPU}
    plain = score_labels(model, pairs, **kw)
    real = prefix_sharing.tree_logprobs

    def noisy(*args, **kwargs):  # what an attention that ignored the mask would give: other scores
        lp, slot = real(*args, **kwargs)
        return lp + torch.randn(lp.shape), slot

    monkeypatch.setattr(prefix_sharing, "tree_logprobs", noisy)
    stats: dict = {}
    assert torch.equal(score_labels(model, pairs, share_prefix=True, stats=stats, **kw), plain)
    assert stats["fell_back"] is True and stats["rows_sharing"] == 0


def test_wrappers_that_add_inputs_take_the_plain_path():
    from llmtune.models.builtin import build_tiny

    body = build_tiny("tiny-llama", "causal_lm")
    assert prefix_sharing.supports_prefix_cache(body)
    assert not prefix_sharing.supports_prefix_cache(torch.nn.Sequential(body))


def test_demo_sets_reuse_the_draw_of_their_position():
    rows = _sst2_rows(40)
    pool, qs = rows[:30], rows[30:]
    fresh = icl.select_random(qs, pool, 4, seed=2)
    shared = icl.select_random(qs, pool, 4, seed=2, sets=3)
    assert all(len(r) == 4 for r in shared)
    assert shared[:3] == fresh[:3]  # the first `sets` queries keep their own draws
    assert shared[3] == shared[0] and shared[7] == shared[1]
    assert len({tuple(r) for r in shared}) == 3


def _cls_file(path, rows):
    path.write_text("".join(json.dumps({"sentence": r.key, "label": ["neg", "pos"][r.label]}) + "\n" for r in rows))
    return path


def test_cli_shared_and_plain_paths_agree_and_say_what_was_shared(tmp_path, cli, write_recipe):
    rows = _sst2_rows(40)
    _cls_file(tmp_path / "train.jsonl", rows[:28])
    _cls_file(tmp_path / "dev.jsonl", rows[28:])
    recipe = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "classification", "train": "train.jsonl", "eval": "dev.jsonl",
                 "columns": {"text": "sentence"}},
        "method": {"name": "in-context"},
        "eval": {"shots": 3, "demo_sets": 2, "batch_size": 4},
    })
    out = {}
    for flag in ("true", "false"):
        res = cli("eval", recipe, "--json", "--set", f"eval.share_prefix={flag}")
        assert res.code == 0, res.err
        out[flag] = json.loads(res.out)
    assert out["true"]["confusion_matrix"] == out["false"]["confusion_matrix"]
    shared = out["true"]["prompting"]["shared_prefix"]
    assert shared["groups"] == 2 and shared["rows_sharing"] == shared["rows"] >= 12
    assert out["false"]["prompting"]["shared_prefix"] is None
    assert out["true"]["prompting"]["demo_sets"] == 2


def test_demo_sets_with_nearest_selection_is_a_recipe_error(cli, write_recipe, tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "a", "label": "x"}\n')
    recipe = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "classification", "train": "t.jsonl"},
        "method": {"name": "in-context"},
        "eval": {"shots": 2, "selection": "nearest", "demo_sets": 4},
    })
    res = cli("validate", recipe)
    assert res.code == 2 and "demo_sets" in res.err and "random" in res.err
