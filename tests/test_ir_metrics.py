"""Document-level ranking metrics (trec_eval's definitions) and the bootstrap interval."""

from __future__ import annotations

import pytest

from llmtune.evaluate.ir_metrics import HEADLINE, average_precision_at_k, bootstrap_interval, score_run


def test_map_at_k_divides_by_every_relevant_document_as_trec_eval_map_cut_does():
    qrels = {"a": 2, "b": 1, "c": 1, "z": 0}
    # Relevant at ranks 1 and 3 of the first 3; c (relevant) is not retrieved: (1/1 + 2/3) / 3.
    assert average_precision_at_k(["a", "x", "b", "z"], qrels, 3) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k(["x", "y", "a"], qrels, 2) == 0.0  # a is past the cutoff
    assert average_precision_at_k(["a"], {"a": 0}, 10) == 0.0


def test_score_run_means_over_judged_queries_and_keeps_each_querys_figures():
    qrels = {"q1": {"a": 1}, "q2": {"b": 3, "c": 1}, "q3": {"d": 0}}
    means, per_query = score_run({"q1": ["a"], "q2": ["x", "c"]}, qrels)
    assert set(per_query) == {"q1", "q2"} and means["queries"] == 2
    assert per_query["q1"] == {"ndcg@10": 1.0, "map@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr": 1.0}
    assert per_query["q2"]["mrr"] == 0.5 and per_query["q2"]["recall@10"] == 0.5
    for metric in HEADLINE:
        assert means[metric] == pytest.approx((per_query["q1"][metric] + per_query["q2"][metric]) / 2)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_queries():
    few = [0.0, 1.0] * 10
    many = [0.0, 1.0] * 1000
    lo, hi = bootstrap_interval(few, samples=2000)
    assert lo < 0.5 < hi
    lo2, hi2 = bootstrap_interval(many, samples=2000)
    assert lo2 < 0.5 < hi2 and hi2 - lo2 < (hi - lo) / 5
    assert bootstrap_interval([0.3] * 5) == (pytest.approx(0.3), pytest.approx(0.3))
