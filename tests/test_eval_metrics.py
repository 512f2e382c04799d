"""Generation metrics (SQuAD-style exact match and token F1) and verbaliser resolution."""

from __future__ import annotations

import pytest

from llmtune.errors import UserError
from llmtune.evaluate.generation import cut_at_stop
from llmtune.evaluate.metrics import exact_match, generation_metrics, normalize_answer, token_f1
from llmtune.evaluate.prompt_rows import resolve_verbalizers


def test_normalize_drops_case_punctuation_articles_and_extra_space():
    assert normalize_answer("  The  Eiffel-Tower, in PARIS!  ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("don't") == "dont"


def test_exact_match_after_normalisation():
    assert exact_match("Paris.", "paris") == 1.0
    assert exact_match("the answer is Paris", "Paris") == 0.0


def test_token_f1_partial_overlap():
    # pred {paris, france} vs ref {paris}: precision 1/2, recall 1 -> F1 2/3
    assert token_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    # repeated words count as often as they appear in both (bag of words)
    assert token_f1("yes yes yes", "yes no") == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert token_f1("completely different", "nothing shared") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "something") == 0.0
    assert token_f1("the", "a") == 1.0  # both normalise to nothing


def test_generation_metrics_average_over_rows():
    m = generation_metrics(["Paris", "Rome, Italy", "x"], ["paris", "Rome", "y"])
    assert m["generated"] == 3
    assert m["exact_match"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("fog.\n\n### Instruction: more", ["###", "\n\n"]) == "fog."
    assert cut_at_stop("  no stop here ", ["###"]) == "no stop here"


def test_verbalizers_by_name_or_id_and_their_errors():
    assert resolve_verbalizers(["neg", "pos"], None) == ["neg", "pos"]
    assert resolve_verbalizers(["neg", "pos"], {"neg": "bad", "pos": "good"}) == ["bad", "good"]
    assert resolve_verbalizers(["neg", "pos"], {"0": "bad", "1": "good"}) == ["bad", "good"]
    with pytest.raises(UserError, match="no word for label 'pos'"):
        resolve_verbalizers(["neg", "pos"], {"neg": "bad"})
    with pytest.raises(UserError, match="unknown label"):
        resolve_verbalizers(["neg", "pos"], {"neg": "bad", "pos": "good", "meh": "so-so"})
    with pytest.raises(UserError, match="share a word"):
        resolve_verbalizers(["neg", "pos"], {"neg": "ok", "pos": "ok"})
