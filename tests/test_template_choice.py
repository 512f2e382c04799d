"""Template comparison does not flatter its winner: chosen on one part of the eval rows,
reported on a disjoint part, or flagged as optimistic when both are the same rows."""

from __future__ import annotations

import json

import pytest

from llmtune.evaluate.metrics import classification_metrics
from llmtune.evaluate.template_choice import TemplateScores, assemble, split_queries

pytestmark = pytest.mark.usefixtures("one_thread")


def _entry(index: int, preds: list[int], golds: list[int]) -> TemplateScores:
    def score(idx):
        return classification_metrics([preds[i] for i in idx], [golds[i] for i in idx], ["a", "b"])

    return TemplateScores(index, f"template {index}", score, {"prompts": len(preds), "prompts_shortened": 0})


def test_split_is_disjoint_covers_every_row_and_ignores_the_limit():
    select, report = split_queries(200, 0.5, seed=0)
    assert set(select).isdisjoint(report) and sorted(select + report) == list(range(200))
    assert 70 < len(select) < 130
    # A row's side depends on its position and the seed only: --limit keeps the first rows' sides.
    small_select, _ = split_queries(50, 0.5, seed=0)
    assert small_select == [i for i in select if i < 50]
    assert split_queries(200, 0.5, seed=1)[0] != select
    assert split_queries(1, 0.5, seed=0) is None and split_queries(10, 0.0, seed=0) is None
    # Both parts are never empty, however the draws fall.
    for n in (2, 3):
        for seed in range(20):
            s, r = split_queries(n, 0.9, seed)
            assert s and r


def test_winner_is_reported_on_the_rows_it_was_not_chosen_on():
    golds = [0] * 8
    select, report = [0, 1, 2, 3], [4, 5, 6, 7]
    # Template 1 is perfect on the selection rows and wrong on the others; template 0 is so-so.
    lucky = _entry(1, [0, 0, 0, 0, 1, 1, 1, 1], golds)
    steady = _entry(0, [0, 0, 1, 1, 0, 0, 1, 1], golds)
    warnings = []
    out = assemble([steady, lucky], 8, "accuracy", (select, report), True, warnings.append)
    best = out["best_template"]
    assert best["index"] == 1 and best["selection_value"] == 1.0
    assert out["accuracy"] == best["value"] == 0.0  # its held-out score, not the 1.0 it was chosen by
    assert out["examples"] == 4 and best["rows"] == 4 and best["selection_rows"] == 4
    assert [t["index"] for t in out["templates"]] == [1, 0]
    assert out["templates"][1]["selection"]["accuracy"] == 0.5 and out["templates"][1]["accuracy"] == 0.5
    assert not warnings and best["optimistic"] is False
    # Without a split the same choice is scored on its own rows, and says so.
    same = assemble([steady, lucky], 8, "accuracy", None, True, warnings.append)
    assert same["best_template"]["optimistic"] is True and same["accuracy"] == 0.5
    assert warnings and "optimistic" in warnings[0]


def test_cli_states_both_splits_and_flags_the_optimistic_case(tmp_path, cli, write_recipe):
    rows = [{"text": f"item number {i}", "y": "ab"[i % 2]} for i in range(12)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = {
        "model": {"name": "tiny-llama"},
        "data": {"task": "classification", "train": "rows.jsonl", "eval": "rows.jsonl",
                 "columns": {"text": "text", "label": "y"}},
        "method": {"name": "in-context"},
        "eval": {"verbalizers": {"a": "red", "b": "blue"}, "templates": ["{{ text }} Colour:", "Say: {{ text }}"]},
    }
    res = cli("eval", write_recipe(base), "--json")
    assert res.code == 0, res.err
    best = json.loads(res.out)["best_template"]
    assert best["selection_rows"] + best["rows"] == 12 and best["selection_rows"] > 0 and best["rows"] > 0
    table = cli("eval", write_recipe(base))
    assert "selection" in table.out and "held out" in table.out and "scored on the other" in table.out
    base["eval"]["template_select_fraction"] = 0
    res = cli("eval", write_recipe(base), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["best_template"]["optimistic"] is True
    assert "optimistic" in res.err
