"""Held-out preference figures are counted per pair, beside the shortcuts that could pass for
learning: chance, the majority answer, the shorter and the longer response. An uneven last
batch cannot move them (trl's own figures average batch means, which it would)."""

from __future__ import annotations

import json
import random

import pytest

from llmtune.evaluate.pairwise import ScoredPair, baselines, pairwise_report, proportion_se


def pair(chosen: float, rejected: float, good: str = "a", bad: str = "b", lc: int = 1, lr: int = 1) -> ScoredPair:
    return ScoredPair(chosen, rejected, good, bad, lc, lr)


def test_accuracy_counts_pairs_and_ties_count_half():
    report = pairwise_report([pair(1, 0), pair(0, 1), pair(2, 2), pair(3, 1)])
    assert report["pairs"] == 4 and report["ties"] == 1
    assert report["accuracy"] == pytest.approx(2.5 / 4)
    assert report["accuracy_se"] == pytest.approx(proportion_se(2.5 / 4, 4))
    assert report["margin"] == pytest.approx((1 - 1 + 0 + 2) / 4)


def test_a_policy_that_is_its_own_reference_scores_chance():
    report = pairwise_report([pair(0.0, 0.0) for _ in range(10)])
    assert report["accuracy"] == 0.5 and report["ties"] == 10 and report["margin"] == 0.0


def test_majority_baseline_is_the_class_prior_where_answers_repeat():
    # 7 pairs prefer "yes" over "no", 3 the other way: always preferring "yes" wins 7 of 10.
    pairs = [pair(0, 0, "yes", "no") for _ in range(7)] + [pair(0, 0, "no", "yes") for _ in range(3)]
    assert baselines(pairs)["majority"] == pytest.approx(0.7)
    assert baselines([pair(0, 0, f"x{i}", f"y{i}") for i in range(5)])["majority"] is None  # nothing repeats


def test_length_baselines_prefer_the_shorter_or_the_longer_response():
    pairs = [pair(0, 0, lc=2, lr=5), pair(0, 0, lc=2, lr=5), pair(0, 0, lc=9, lr=5), pair(0, 0, lc=3, lr=3)]
    b = baselines(pairs)
    assert b["shorter"] == pytest.approx((1 + 1 + 0 + 0.5) / 4) and b["longer"] == pytest.approx(1 - b["shorter"])
    assert b["chance"] == 0.5


def write_pairs(path, n: int, seed: int, flipped: int = 0):
    """Chosen praise, rejected complaints, over subjects the model sees in training; the
    last `flipped` pairs the other way round (a model that learnt the rest loses those)."""
    rng = random.Random(seed)
    subjects = ["film", "book", "meal", "song", "trip", "game", "show", "class", "park", "hotel"]
    rows = [{"prompt": f"How was the {s}?", "chosen": f" The {s} was good.", "rejected": f" The {s} was bad."}
            for s in (rng.choice(subjects) for _ in range(n))]
    for row in rows[n - flipped:]:
        row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("method", [{"name": "reward"}, {"name": "dpo", "peft": {"r": 8, "target_modules": "all-linear"}}])
def test_an_uneven_last_batch_cannot_move_the_held_out_figure(cli, write_recipe, tmp_path, method):
    # Some held-out pairs flipped, so that they are not all won: a batch-mean average would
    # then depend on where the batches fall (20 pairs: 16 + 4, or 7 + 7 + 6).
    recipe = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "preference", "train": str(write_pairs(tmp_path / "train.jsonl", 32, 0)),
                 "eval": str(write_pairs(tmp_path / "eval.jsonl", 20, 1, flipped=6)), "max_length": 48},
        "method": method, "train": {"max_steps": 2, "batch_size": 8, "lr": 2e-3, "log_every": 1},
        "eval": {"generate": False}})
    run = tmp_path / "run"
    assert cli("train", recipe, "-o", run, "--json").code == 0
    key = "accuracy" if method["name"] == "reward" else "rewards/accuracies"
    margin = "margin" if method["name"] == "reward" else "rewards/margins"
    results = {}
    for batch in (1, 7, 16, 64):
        res = cli("eval", run, "--set", f"eval.batch_size={batch}", "--json")
        assert res.code == 0, res.err
        results[batch] = json.loads(res.out)
    alone = results[1]  # every pair scored in a batch of its own: the per-pair count itself
    assert alone["pairs"] == 20 and 0 < alone[key] < 1, alone
    for out in results.values():
        assert out[key] == alone[key] and out["pairs"] == 20
        assert out[margin] == pytest.approx(alone[margin], abs=1e-4)
        assert out["accuracy_se"] == pytest.approx(proportion_se(alone[key], 20))
        assert set(out["baselines"]) == {"chance", "majority", "shorter", "longer"}
