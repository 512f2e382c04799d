"""Readers, task encoding (label ids, response-only loss), batching."""

from __future__ import annotations

import json

import pytest

from llmtune.data.batching import collate, epoch_batches
from llmtune.data.encode import IGNORE, EncodeStats, encode_classification, encode_sft, label_names
from llmtune.data.readers import read_rows
from llmtune.recipe.schema import DataSection


def _cfg(**kw):
    base = {"task": "sft", "train": {"path": "x"}}
    base.update(kw)
    return DataSection.model_validate(base)


@pytest.fixture(scope="module")
def tok():
    from llmtune.models.builtin import load_tiny_tokenizer

    return load_tiny_tokenizer()


def test_readers_agree_across_formats(tmp_path):
    rows = [{"text": 'he said "hi"', "label": "pos"}, {"text": "bad, awful", "label": "neg"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.tsv").write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows))
    (tmp_path / "a.csv").write_text('text,label\n"he said ""hi""",pos\n"bad, awful",neg\n')
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    for ext in ("jsonl", "json", "tsv", "csv", "parquet"):
        got = read_rows(tmp_path / f"a.{ext}")
        assert [r.data for r in got] == rows, ext
    assert read_rows(tmp_path / "a.jsonl")[1].where.endswith("a.jsonl:2")
    assert read_rows(tmp_path / "a.tsv")[1].where.endswith("a.tsv:3")
    assert len(read_rows(tmp_path / "a.jsonl", limit=1)) == 1


def test_a_csv_quote_never_closed_names_its_line_and_multi_line_fields_still_read(tmp_path):
    """Python's csv read a quote opened on the last lines and never closed as one field
    holding the rest of the file; nothing said so unless that text was over csv's field limit."""
    from llmtune.errors import DataError

    good = 'text,label\n"two\nlines, one ""quoted""",pos\nab"c,neg\n"x"y,neg\n'
    (tmp_path / "good.csv").write_text(good)
    got = [(r.data, r.where.rsplit(":", 1)[1]) for r in read_rows(tmp_path / "good.csv")]
    assert got == [({"text": 'two\nlines, one "quoted"', "label": "pos"}, "3"),
                   ({"text": 'ab"c', "label": "neg"}, "4"), ({"text": "xy", "label": "neg"}, "5")]
    (tmp_path / "last.csv").write_text(good + '"three\nlines, ""open"" to the end,neg\nok,pos\n')
    with pytest.raises(DataError, match=r"last\.csv:6: a quote opened on this line never closes .*lines 6-8,"):
        read_rows(tmp_path / "last.csv")
    (tmp_path / "one.csv").write_text('text,label\nfine,pos\nfine,"neg')  # no newline at the end
    with pytest.raises(DataError, match=r"one\.csv:3: a quote opened on this line never closes \(csv"):
        read_rows(tmp_path / "one.csv", limit=5)
    (tmp_path / "header.csv").write_text('"text,label\nfine,pos\n')
    with pytest.raises(DataError, match=r"header\.csv:1: a quote opened"):
        read_rows(tmp_path / "header.csv")
    # TSV does not quote (SST-2 text holds stray quotes): the same text is rows, not an error.
    (tmp_path / "a.tsv").write_text('text\tlabel\n"open\tpos\nnext\tneg\n')
    assert [r.data["text"] for r in read_rows(tmp_path / "a.tsv")] == ['"open', "next"]


def test_labels_by_name_or_id(tok, tmp_path):
    (tmp_path / "t.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\t0\nfine\tpositive\n")
    rows = read_rows(tmp_path / "t.tsv")
    cfg = DataSection.model_validate({"task": "classification", "train": {"path": "t.tsv"},
                                      "columns": {"text": "sentence"}, "max_length": 4})
    names = ["negative", "positive"]
    out = encode_classification(rows, tok, cfg, names, EncodeStats())
    assert [e["label"] for e in out] == [1, 0, 1]
    assert all(len(e["input_ids"]) <= 4 for e in out)
    assert label_names(rows[:2], "label", None) == ["0", "1"]


def test_alpaca_sft_trains_on_response_only(tok):
    from llmtune.data.readers import Row

    row = Row({"instruction": "Say hi", "input": "", "output": "hi there"}, "x:1")
    [ex] = encode_sft([row], tok, _cfg(max_length=128, prompt_style="plain"), EncodeStats())
    labels, ids = ex["labels"], ex["input_ids"]
    assert len(labels) == len(ids)
    trained = [i for i, y in zip(ids, labels) if y != IGNORE]
    assert tok.decode(trained) == "hi there" + tok.eos_token
    prompt = [i for i, y in zip(ids, labels) if y == IGNORE]
    assert "### Instruction:\nSay hi" in tok.decode(prompt) and "### Input" not in tok.decode(prompt)


def test_chat_sft_trains_on_assistant_turns_only(tok):
    from llmtune.data.readers import Row

    msgs = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "four"},
            {"role": "user", "content": "and 3+3?"}, {"role": "assistant", "content": "six"}]
    [ex] = encode_sft([Row({"messages": msgs}, "x:1")], tok, _cfg(max_length=256), EncodeStats())
    trained = tok.decode([i for i, y in zip(ex["input_ids"], ex["labels"]) if y != IGNORE])
    assert "four" in trained and "six" in trained
    assert "2+2" not in trained and "user" not in trained
    full = tok.decode(ex["input_ids"])
    assert full == tok.apply_chat_template(msgs, tokenize=False)


def test_sft_truncation_is_counted(tok):
    from llmtune.data.readers import Row

    stats = EncodeStats()
    rows = [Row({"instruction": "x", "output": "word " * 200}, "x:1")]
    [ex] = encode_sft(rows, tok, _cfg(max_length=32), stats)
    assert len(ex["input_ids"]) == 32 and stats.truncated == 1


def test_epoch_batches_cover_everything_and_are_reproducible():
    lengths = [(i * 7) % 31 + 1 for i in range(203)]
    a = epoch_batches(lengths, 8, seed=3, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(203))
    assert a == epoch_batches(lengths, 8, seed=3, epoch=0)
    assert a != epoch_batches(lengths, 8, seed=3, epoch=1)
    # grouping by length: far less padding than random batches
    pad = lambda bs: sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)
    assert pad(a) < 0.5 * pad(epoch_batches(lengths, 8, seed=3, epoch=0, group_by_length=False))


def test_collate_pads_to_longest_in_batch():
    batch = collate([{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [5], "labels": [5]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [5, IGNORE, IGNORE]]
    cls = collate([{"input_ids": [1, 2], "label": 1}, {"input_ids": [3], "label": 0}], pad_id=9)
    assert cls["labels"].tolist() == [1, 0] and cls["input_ids"].shape == (2, 2)
