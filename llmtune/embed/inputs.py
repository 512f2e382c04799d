"""Stream (id, text) rows from a file in chunks, so inputs of any size fit in memory.

Formats: .txt (one text a line; every line is a row, blank lines included, so row ids are
line numbers counted from 0), .jsonl, .csv, .tsv and .parquet (a text column and an
optional id column). Without an id column a row's id is its index in the file (blank
lines of JSONL/CSV/TSV files are not rows). Every problem names the file and the row.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from llmtune.errors import DataError, UserError

KINDS = {".txt": "txt", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


@dataclass
class Chunk:
    ids: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def input_kind(path: Path) -> str:
    """The reader for `path`, or a DataError saying what is wrong with it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input file not found; check the path")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; pass a .txt, .jsonl, .csv, .tsv or .parquet file")
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown input type {path.suffix!r}; use .txt (one text a line), .jsonl, "
                        f".csv, .tsv or .parquet")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    return kind


def read_chunks(path: Path, *, text_column: str = "text", id_column: str | None = None,
                chunk_size: int = 8192) -> Iterator[Chunk]:
    """Yield Chunks of up to `chunk_size` rows, in file order."""
    path = Path(path)
    kind = input_kind(path)
    if kind == "txt" and id_column:
        raise UserError(f"{path}: a .txt input has no columns, so --id-column {id_column!r} cannot apply; "
                        f"use a .jsonl/.csv/.tsv/.parquet file with an id column, or drop --id-column")
    rows = _ROWS[kind](path, text_column, id_column)
    chunk = Chunk()
    try:
        for row_id, text in rows:
            chunk.ids.append(row_id)
            chunk.texts.append(text)
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = Chunk()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); convert the file "
                        f"to UTF-8") from None
    if len(chunk):
        yield chunk


def count_rows(path: Path) -> int:
    """About how many rows `path` holds, for a progress bar (text files: newlines)."""
    path = Path(path)
    if input_kind(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    lines, last = 0, b"\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    lines += last != b"\n"  # a last line without its newline
    return lines - (1 if input_kind(path) in ("csv", "tsv") else 0)


def _text_value(value: Any, where: str, column: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise DataError(f"{where}: column {column!r} is empty (null); fill it in or remove the row")
    if isinstance(value, (int, float, bool)):
        return str(value)
    raise DataError(f"{where}: column {column!r} holds a {type(value).__name__}, not text")


def _missing(where: str, column: str, columns, flag: str) -> DataError:
    return DataError(f"{where}: no column {column!r} (columns: {', '.join(map(str, columns))}); "
                     f"name the right one with {flag}")


def _txt_rows(path: Path, text_column: str, id_column: str | None):
    with open(path, encoding="utf-8", newline="") as fh:
        for index, line in enumerate(fh):
            yield index, line.rstrip("\r\n")


def _jsonl_rows(path: Path, text_column: str, id_column: str | None):
    index = 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg}); fix or remove the line") from None
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
            if text_column not in obj:
                raise _missing(where, text_column, obj, "--text-column")
            if id_column is not None and id_column not in obj:
                raise _missing(where, id_column, obj, "--id-column")
            row_id = obj[id_column] if id_column is not None else index
            yield _id_value(row_id, where, id_column), _text_value(obj[text_column], where, text_column)
            index += 1


def _delimited_rows(path: Path, text_column: str, id_column: str | None, delimiter: str):
    from llmtune.data.csv_quotes import RecordLines, opened_on

    with open(path, encoding="utf-8", newline="") as fh:
        lines = RecordLines(fh)
        # TSV text often holds quote characters that are not CSV quoting (SST-2 does).
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
        reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
        try:
            yield from _delimited_values(path, reader, lines, text_column, id_column)
        except csv.Error as exc:  # a field over csv's size limit (often a quote never closed), NUL bytes
            raise DataError(f"{path}:{reader.line_num}: cannot parse this line ({exc}); a quote opened and "
                            f"never closed swallows the lines after it: fix the quoting or remove the "
                            f"line{opened_on(lines, reader)}") from None


def _delimited_values(path: Path, reader, lines, text_column: str, id_column: str | None):
    from llmtune.data.csv_quotes import records

    rows_read = records(reader, lines, path)
    header = [h.strip() for h in next(rows_read, [])]
    if not header:
        raise DataError(f"{path}:1: no header row; the first line must name the columns")
    for column, flag in ((text_column, "--text-column"), (id_column, "--id-column")):
        if column is not None and column not in header:
            raise _missing(f"{path}:1", column, header, flag)
    text_at = header.index(text_column)
    id_at = header.index(id_column) if id_column is not None else None
    index = 0
    for values in rows_read:
        if not values or all(not v.strip() for v in values):
            continue
        where = f"{path}:{reader.line_num}"
        if len(values) != len(header):
            raise DataError(f"{where}: {len(values)} fields but the header has {len(header)} "
                            f"({', '.join(header)}); check the delimiters in this line")
        yield (values[id_at] if id_at is not None else index), values[text_at]
        index += 1


def _parquet_rows(path: Path, text_column: str, id_column: str | None):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    names = pf.schema_arrow.names
    for column, flag in ((text_column, "--text-column"), (id_column, "--id-column")):
        if column is not None and column not in names:
            raise _missing(f"{path}", column, names, flag)
    columns = [text_column] + ([id_column] if id_column is not None and id_column != text_column else [])
    index = 0
    for batch in pf.iter_batches(batch_size=8192, columns=columns):
        texts = batch.column(text_column).to_pylist()
        ids = batch.column(id_column).to_pylist() if id_column is not None else range(index, index + len(texts))
        for offset, (row_id, text) in enumerate(zip(ids, texts)):
            where = f"{path} row {index + offset}"
            yield _id_value(row_id, where, id_column), _text_value(text, where, text_column)
        index += len(texts)


def _id_value(value: Any, where: str, id_column: str | None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        if value is None:
            raise DataError(f"{where}: column {id_column!r} is empty (null); every row needs an id")
        raise DataError(f"{where}: id {value!r} in column {id_column!r} is a {type(value).__name__}; "
                        f"ids must be integers or strings")
    return value


_ROWS = {
    "txt": _txt_rows,
    "jsonl": _jsonl_rows,
    "csv": lambda p, t, i: _delimited_rows(p, t, i, ","),
    "tsv": lambda p, t, i: _delimited_rows(p, t, i, "\t"),
    "parquet": _parquet_rows,
}
