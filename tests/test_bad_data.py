"""Bad data never crashes and is never dropped silently. Every case goes through
`llmtune train`: an error exits 2 with the file and row (line) named and no traceback; a
policy that drops or truncates rows reports how many, in the log and in the manifest."""

from __future__ import annotations

import gzip
import json
import re

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


HEADER = "sentence\tlabel\n"
GOOD = ["a fine film\t1\n", "dull and long\t0\n", "quite lovely\t1\n", "a mess\t0\n"] * 2


def _recipe(train: str, **data) -> dict:
    return {
        "model": {"name": "tiny-bert"},
        "data": {"task": "classification", "train": train, "eval_fraction": 0.25,
                 "columns": {"text": "sentence", "label": "label"}, "max_length": 16, **data},
        "method": {"name": "full"},
        "train": {"max_steps": 1, "batch_size": 4},
    }


def _write(tmp_path, name: str, content) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _jsonl(rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD_JSON = [{"sentence": "a fine film", "label": 1}, {"sentence": "dull", "label": 0}] * 4

# (file name, content, extra data settings, expected message as a regex; {f} is the file)
ERRORS = {
    "missing column": ("d.tsv", "text\tlabel\n" + "nice\t1\n" * 8, {}, r"{f}:2: no column 'sentence'"),
    "missing label column": ("d.tsv", "sentence\ty\n" + "nice\t1\n" * 8, {}, r"{f}:2: no column 'label'"),
    "empty file": ("d.tsv", "", {}, r"{f}: the file is empty"),
    "header only": ("d.tsv", HEADER, {}, r"{f}: no rows found"),
    "malformed jsonl": ("d.jsonl", _jsonl(GOOD_JSON[:2] + ['{"sentence": "x", "label": '] + GOOD_JSON), {},
                        r"{f}:3: not valid JSON"),
    "jsonl list row": ("d.jsonl", _jsonl(GOOD_JSON[:3] + ["[1, 2]"]), {}, r"{f}:4: expected a JSON object"),
    "non-utf8": ("d.tsv", HEADER.encode() + b"fine\t1\nok\t0\nbad \xff\xfe byte\t1\n" + b"x\t0\n" * 6, {},
                 r"{f}:4: not UTF-8 text"),
    "label outside set": ("d.tsv", HEADER + "".join(GOOD) + "meh\tneutral\n", {"labels": ["0", "1"]},
                          r"{f}:10: label 'neutral' is not in the label set"),
    "label id out of range": ("d.tsv", HEADER + "".join(GOOD) + "meh\t7\n", {"labels": ["neg", "pos"]},
                              r"{f}:10: label '7' is not in the label set"),
    "empty label": ("d.tsv", HEADER + "".join(GOOD) + "meh\t\n", {}, r"{f}:10: the label in column 'label' is empty"),
    "empty text": ("d.tsv", HEADER + "".join(GOOD) + " \t1\n", {}, r"{f}:10: empty text in column 'sentence'"),
    "all texts empty": ("d.tsv", HEADER + " \t1\n" * 8, {"empty_rows": "drop"}, r"{f}: every row has an empty"),
    "field count": ("d.tsv", HEADER + "".join(GOOD) + "a\tb\tc\n", {}, r"{f}:10: 3 fields but the header has 2"),
    "field over csv limit": ("d.csv", "sentence,label\n" + "ok,1\n" * 3 + "x" * 200_000 + ",0\n", {},
                             r"{f}:5: cannot parse this line \(field larger than field limit"),
    "quote never closed": ("d.csv", "sentence,label\n" + "ok,1\n" * 8 + '"never closed,1\n' + "more,0\n" * 3, {},
                           r"{f}:10: a quote opened on this line never closes \(csv would read the rest of the "
                           r"file, lines 10-13,"),
    "duplicate header": ("d.csv", "sentence,sentence,label\n" + "a,b,1\n" * 8, {}, r"{f}:1: .*more than once"),
    "text is a list": ("d.jsonl", _jsonl(GOOD_JSON + [{"sentence": ["a", "b"], "label": 1}]), {},
                       r"{f}:9: column 'sentence' holds a list"),
    "unknown suffix": ("d.xlsx", "whatever", {}, r"{f}: unknown file type '.xlsx'"),
    "corrupt gzip": ("d.jsonl.gz", b"\x1f\x8b\x08\x00not really gzip", {}, r"{f}: cannot read it|{f}: .*compressed"),
    "json not a list": ("d.json", '{"a": 1, "b": 2}', {}, r"{f}: expected a JSON list of objects"),
    "huge number": ("d.jsonl", _jsonl(GOOD_JSON[:2]) + '{"sentence": "x", "label": ' + "9" * 5000 + "}\n", {},
                    r"{f}:3: JSON that cannot be read"),
}


@pytest.mark.parametrize("case", list(ERRORS), ids=list(ERRORS))
def test_bad_data_is_a_clear_error(case, tmp_path, write_recipe, cli):
    name, content, data, pattern = ERRORS[case]
    f = _write(tmp_path, name, content)
    res = cli("train", write_recipe(_recipe(f, **data)), "--output", tmp_path / "run")
    assert res.code == 2, res.err
    assert "Traceback" not in res.err + res.out
    assert re.search(pattern.format(f=re.escape(f)), res.err), res.err


def test_missing_and_directory_paths(tmp_path, write_recipe, cli):
    res = cli("train", write_recipe(_recipe(str(tmp_path / "nope.tsv"))), "--output", tmp_path / "run")
    assert res.code == 2 and f"file not found: {tmp_path / 'nope.tsv'}" in res.err
    folder = tmp_path / "folder.tsv"
    folder.mkdir()
    res = cli("train", write_recipe(_recipe(str(folder))), "--output", tmp_path / "run2")
    assert res.code == 2 and f"{folder}: a folder, not a data file" in res.err


def test_eval_file_label_unseen_in_training_names_the_eval_row(tmp_path, write_recipe, cli):
    train = _write(tmp_path, "train.tsv", HEADER + "".join(GOOD))
    ev = _write(tmp_path, "eval.tsv", HEADER + "fine\t1\nodd\t2\n")
    recipe = _recipe(train)
    recipe["data"]["eval"] = ev
    res = cli("train", write_recipe(recipe), "--output", tmp_path / "run")
    assert res.code == 2 and f"{ev}:3: label '2' is not in the label set (0, 1)" in res.err


def test_dropped_and_truncated_rows_are_counted(tmp_path, write_recipe, cli):
    long = " ".join(["word"] * 400)  # ~400 tokens against max_length 16
    rows = HEADER + "".join(GOOD) + " \t1\n\t0\n" + f"{long}\t1\n{long}\t0\n{long}\t1\n"
    f = _write(tmp_path, "d.tsv", rows)
    recipe = _recipe(f, empty_rows="drop", eval_fraction=0.0)
    out = tmp_path / "run"
    res = cli("train", write_recipe(recipe), "--output", out)
    assert res.code == 0, res.err
    assert "3 truncated to 16 tokens" in res.err
    assert "2 rows with empty text dropped" in res.err
    summary = json.loads((out / "manifest.json").read_text())["data_summary"]
    assert summary["truncated"] == 3 and summary["dropped_empty"] == 2 and summary["train_rows"] == 13


def test_sft_rows_cut_to_nothing_are_counted_not_silently_lost(tmp_path, write_recipe, cli):
    rows = [{"instruction": "say hi", "output": "hi"}] * 6 + [{"instruction": "long " * 300, "output": "ok"}] * 2
    f = _write(tmp_path, "sft.jsonl", _jsonl(rows))
    recipe = {"model": {"name": "tiny-llama"}, "data": {"task": "sft", "train": f, "eval_fraction": 0.0,
                                                         "max_length": 32},
              "method": {"name": "full"}, "train": {"max_steps": 1, "batch_size": 2}}
    out = tmp_path / "run"
    res = cli("train", write_recipe(recipe), "--output", out)
    assert res.code == 0, res.err
    assert "2 rows dropped because truncation cut off everything the loss trains on" in res.err
    assert json.loads((out / "manifest.json").read_text())["data_summary"]["dropped_truncated"] == 2


@pytest.mark.parametrize("rows,pattern", [
    ([{"instruction": "x"}], r"{f}:1: no column 'output'"),
    ([{"messages": "not a list"}], r"{f}:1: column 'messages' must be a list"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], r"{f}:1: no assistant message"),
    ([{"instruction": "x", "output": ""}], r"{f}:1: empty 'instruction' or 'output'"),
], ids=["no-output", "messages-not-list", "no-assistant", "empty-output"])
def test_bad_sft_rows(rows, pattern, tmp_path, write_recipe, cli):
    f = _write(tmp_path, "sft.jsonl", _jsonl(rows + [{"instruction": "a", "output": "b"}] * 4))
    recipe = {"model": {"name": "tiny-llama"}, "data": {"task": "sft", "train": f, "eval_fraction": 0.0},
              "method": {"name": "full"}, "train": {"max_steps": 1}}
    if "messages" in rows[0]:
        recipe["data"]["format"] = "chat"
    res = cli("train", write_recipe(recipe), "--output", tmp_path / "run")
    assert res.code == 2 and "Traceback" not in res.err
    assert re.search(pattern.format(f=re.escape(f)), res.err), res.err


def test_byte_order_mark_and_gzip_are_read(tmp_path, write_recipe, cli):
    """Not errors: an Excel-style BOM before the header, and a real .jsonl.gz."""
    f = _write(tmp_path, "bom.tsv", "\ufeff" + HEADER + "".join(GOOD))
    assert cli("train", write_recipe(_recipe(f)), "--output", tmp_path / "a").code == 0
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(_jsonl(GOOD_JSON).encode()))
    res = cli("train", write_recipe(_recipe(str(gz))), "--output", tmp_path / "b")
    assert res.code == 0, res.err
