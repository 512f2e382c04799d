"""Preference, unpaired (KTO) and prompt rows: every accepted form, and errors that name the row."""

from __future__ import annotations

import json

import pytest

from conftest import DATA
from llmtune.data.preference import load_preference_data, normalise, split_hh
from llmtune.data.readers import Row
from llmtune.errors import DataError
from llmtune.recipe.schema import DataSection


def cfg(task: str, **kw) -> DataSection:
    columns = kw.pop("columns", {})
    return DataSection(task=task, train="unused.jsonl", columns=columns, **kw)


def rows(*dicts) -> list[Row]:
    return [Row(d, f"data.jsonl:{i + 1}") for i, d in enumerate(dicts)]


def test_text_pairs_pass_through():
    out = normalise(rows({"prompt": "Q?", "chosen": " yes", "rejected": " no", "extra": 1}), cfg("preference"))
    assert out == [{"prompt": "Q?", "chosen": " yes", "rejected": " no"}]


def test_hh_transcripts_split_at_the_last_shared_assistant_turn():
    shared = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me?\n\nAssistant:"
    out = normalise(rows({"chosen": shared + " Sure.", "rejected": shared + " No."}), cfg("preference"))
    assert out == [{"prompt": shared, "chosen": " Sure.", "rejected": " No."}]
    # Replies that begin alike still split at the marker, not inside the reply.
    prompt, c, r = split_hh(shared + " Sure, here", shared + " Sure, no", "x")
    assert (prompt, c, r) == (shared, " Sure, here", " Sure, no")


def test_hh_without_a_shared_turn_is_refused_with_the_row():
    with pytest.raises(DataError, match=r"data.jsonl:1: .*share no"):
        normalise(rows({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "something else"}), cfg("preference"))


def test_bundled_hh_rlhf_sample():
    path = DATA / "hh_rlhf_harmless_64.jsonl"
    data = load_preference_data(DataSection(task="preference", train=str(path), eval_fraction=0.25))
    assert (len(data.train), len(data.eval)) == (48, 16) and not data.chat
    first = data.train[0]
    assert first["prompt"].endswith("\n\nAssistant:") and first["prompt"].startswith("\n\nHuman:")
    assert "\n\nAssistant:" not in first["chosen"] and first["chosen"] != first["rejected"]


def test_chat_conversations_share_their_prompt():
    system = {"role": "system", "content": "be kind"}
    user = {"role": "user", "content": "hi"}
    out = normalise(rows({"chosen": [system, user, {"role": "assistant", "content": "hello"}],
                          "rejected": [system, user, {"role": "assistant", "content": "go away"}]}), cfg("preference"))
    assert out[0]["prompt"] == [system, user]
    assert out[0]["chosen"] == [{"role": "assistant", "content": "hello"}]
    assert out[0]["rejected"] == [{"role": "assistant", "content": "go away"}]


def test_sharegpt_pairs_with_a_prompt_column_and_text_parts():
    row = {"conversations": [{"from": "human", "value": "hi"}],
           "chosen": {"from": "gpt", "value": "hello"},
           "rejected": {"from": "gpt", "value": [{"type": "text", "value": "bye"}]}}
    out = normalise(rows(row), cfg("preference", columns={"prompt": "conversations"}))
    assert out == [{"prompt": [{"role": "user", "content": "hi"}],
                    "chosen": [{"role": "assistant", "content": "hello"}],
                    "rejected": [{"role": "assistant", "content": "bye"}]}]


def test_bundled_sharegpt_dpo_demo():
    data = load_preference_data(DataSection(task="preference", train=str(DATA / "dpo_en_demo_24.json"),
                                            eval_fraction=0.0, columns={"prompt": "conversations"}))
    assert data.chat and len(data.train) == 24
    assert all(r["chosen"][-1]["role"] == "assistant" and r["prompt"][-1]["role"] == "user" for r in data.train)


def test_mixed_text_and_chat_rows_are_refused():
    with pytest.raises(DataError, match=r"data.jsonl:2: .*one form"):
        normalise(rows({"prompt": "q", "chosen": "a", "rejected": "b"},
                       {"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}),
                  cfg("preference"))


def test_missing_columns_name_the_mapping():
    with pytest.raises(DataError, match=r"data.jsonl:1: no column 'better'.*data.columns.chosen"):
        normalise(rows({"prompt": "q", "chosen": "a", "rejected": "b"}), cfg("preference", columns={"chosen": "better"}))
    with pytest.raises(DataError, match="not HH-RLHF transcripts"):
        normalise(rows({"chosen": "a", "rejected": "b"}), cfg("preference"))


def test_empty_responses_error_or_drop():
    data = rows({"prompt": "q", "chosen": " ", "rejected": "b"}, {"prompt": "q", "chosen": "a", "rejected": "b"})
    with pytest.raises(DataError, match=r"data.jsonl:1: empty.*empty_rows: drop"):
        normalise(data, cfg("preference"))
    summary = {}
    assert len(normalise(data, cfg("preference", empty_rows="drop"), summary)) == 1
    assert summary["dropped_empty"] == 1


def test_kto_rows_from_completions_messages_and_pairs():
    out = normalise(rows({"prompt": "q", "completion": "a", "label": "false"},
                         {"prompt": "q", "completion": "b", "label": 1}), cfg("unpaired_preference"))
    assert [r["label"] for r in out] == [False, True]
    chat = normalise(rows({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                           "label": True}), cfg("unpaired_preference"))
    assert chat == [{"prompt": [{"role": "user", "content": "q"}],
                     "completion": [{"role": "assistant", "content": "a"}], "label": True}]
    unpaired = normalise(rows({"prompt": "q", "chosen": "good", "rejected": "bad"}), cfg("unpaired_preference"))
    assert unpaired == [{"prompt": "q", "completion": "good", "label": True},
                        {"prompt": "q", "completion": "bad", "label": False}]
    with pytest.raises(DataError, match=r"data.jsonl:1: column 'label' is 'maybe'"):
        normalise(rows({"prompt": "q", "completion": "a", "label": "maybe"}), cfg("unpaired_preference"))


def test_bundled_kto_demo_reads_as_unpaired_chat():
    path = DATA / "kto_en_demo_32.json"
    data = load_preference_data(DataSection(task="unpaired_preference", train=str(path), eval_fraction=0.0))
    assert data.chat and len(data.train) == 32
    assert {r["label"] for r in data.train} == {True, False}
    assert all(r["completion"][-1]["role"] == "assistant" for r in data.train)


def test_prompt_rows_keep_scalar_columns_for_reward_functions(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"prompt": "2+2=", "answer": "4"}, {"prompt": "3+3="}]) + "\n")
    data = load_preference_data(DataSection(task="prompts", train=str(path), eval_fraction=0.0))
    assert data.train == [{"prompt": "2+2=", "answer": "4"}, {"prompt": "3+3=", "answer": None}]


def test_prompt_rows_from_messages_and_transcripts():
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert normalise(rows({"messages": msgs}), cfg("prompts")) == [{"prompt": msgs[:1]}]
    hh = "\n\nHuman: q\n\nAssistant: a"
    assert normalise(rows({"chosen": hh, "rejected": hh}), cfg("prompts")) == [{"prompt": "\n\nHuman: q\n\nAssistant:"}]
    with pytest.raises(DataError, match=r"data.jsonl:1: no prompt column 'prompt'"):
        normalise(rows({"question": "q"}), cfg("prompts"))


def test_held_out_fingerprint_names_the_file_it_was_split_from(tmp_path):
    """Two files split with the same fraction and seed hold different eval rows: their eval
    fingerprints (what compare's eval identity reads) must differ too."""
    prints = []
    for name, reply in (("a.jsonl", "yes"), ("b.jsonl", "no")):
        path = tmp_path / name
        path.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": f" {reply}", "rejected": " meh"}) + "\n"
                                for i in range(10)))
        data = load_preference_data(DataSection(task="preference", train=str(path), eval_fraction=0.2))
        prints.append(data.fingerprint["eval"])
    assert prints[0] != prints[1] and all(p.startswith("heldout:") for p in prints)
