"""llmtune.jsonl_out: rows already written are known by key, a torn last line is dropped, an
earlier line that is not ours stops with path:line, and nothing is created until a write."""

from __future__ import annotations

import json

import pytest

from llmtune.errors import DataError
from llmtune.jsonl_out import ResumableJsonl


def test_keeps_whole_rows_drops_a_torn_last_line_and_appends(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"line": 1, "x": "a"}\n{"line": 3, "x": "b"}\n{"line": 4, "x')
    with ResumableJsonl(path, key="line") as out:
        assert out.torn and set(out.done) == {1, 3}
        out.append([{"line": 4, "x": "c"}, {"line": 5, "x": "ü"}])
        assert set(out.done) == {1, 3, 4, 5}
        assert path.read_text().count("\n") == 2  # queued until flushed
        out.flush()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 3, 4, 5] and rows[-1]["x"] == "ü"


def test_a_foreign_line_is_named_and_the_file_left_alone(tmp_path):
    path = tmp_path / "out.jsonl"
    text = '{"line": 1}\nnot json\n{"line": 2}\n'
    path.write_text(text)
    with pytest.raises(DataError, match=f"{path}:2: not a row this command wrote"):
        ResumableJsonl(path, key="line")
    path.write_text('{"other": 1}\n')
    with pytest.raises(DataError, match=":1: "):
        ResumableJsonl(path, key="line")


def test_nothing_is_created_before_the_first_write(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    ResumableJsonl(path, key="line").close()
    assert not path.exists()
    with ResumableJsonl(path, key="line") as out:
        out.append([{"line": 1}])
    assert path.read_text() == '{"line": 1}\n'
