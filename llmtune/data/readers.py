"""Read rows from local files or hub datasets. Every problem names the file and row."""

from __future__ import annotations

import csv
import json
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmtune.errors import DataError

SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
            ".txt": "txt", ".gz": "gz"}


@dataclass
class Row:
    data: dict[str, Any]
    where: str
    """`file:line` (or `file row N`) for messages about this row."""


def read_rows(path: Path, limit: int | None = None) -> list[Row]:
    path = Path(path)
    problem = not_a_data_file(path)
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind == "gz":
        inner = Path(path.stem).suffix.lower()
        if inner not in (".jsonl", ".json"):
            raise DataError(f"{path}: only .jsonl.gz is read compressed; decompress other files first")
        kind = "jsonl.gz"
    if kind is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use .json, .jsonl, .csv, .tsv, "
                        f".parquet or .txt")
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty")
        rows = _READERS[kind](path, limit)
    except OSError as exc:  # permissions, a file vanishing mid-read, a corrupt .gz
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (EOFError, zlib.error) as exc:
        raise DataError(f"{path}: the compressed file is damaged or cut short ({exc or 'truncated'})") from None
    if not rows:
        raise DataError(f"{path}: no rows found (only blank lines or a header?)")
    return rows[:limit] if limit else rows


def not_a_data_file(path: Path) -> str | None:
    """Why `path` cannot be read as a data file (missing, a folder, a named pipe, a device), or
    None for a regular file. A data file is read more than once (fingerprinted for the cache,
    then read for its rows), which a pipe cannot give."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return "file not found (paths are relative to the recipe's folder)"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder, not a data file; point the path at a file inside it"
    kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return (f"{kind}, not a regular file; llmtune reads a data file more than once (to fingerprint it "
            f"for the cache, then for its rows), so write the rows to a file first")


def _read_text(path: Path, opener=open) -> str:
    """The whole file as text. Decoding it in one piece gives the exact line of a bad byte."""
    with opener(path, "rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8-sig")  # -sig: drop the byte-order mark some editors write
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
                        f"convert the file to UTF-8 or remove the row") from None


def _parse_json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); fix or remove "
                        f"the line") from None
    except (ValueError, RecursionError) as exc:  # 5000-digit numbers, absurd nesting
        raise DataError(f"{where}: JSON that cannot be read ({type(exc).__name__}: {str(exc)[:100]})") from None


def _read_jsonl(path: Path, limit: int | None, opener=open) -> list[Row]:
    rows = []
    for lineno, line in enumerate(_read_text(path, opener).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        obj = _parse_json(line, where)
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object per line, got {type(obj).__name__}")
        rows.append(Row(obj, where))
        if limit and len(rows) >= limit:
            break
    return rows


def _read_jsonl_gz(path: Path, limit: int | None) -> list[Row]:
    import gzip

    return _read_jsonl(path, limit, opener=gzip.open)


def _read_json(path: Path, limit: int | None) -> list[Row]:
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: JSON that cannot be read ({type(exc).__name__}: {str(exc)[:100]})") from None
    if isinstance(obj, dict):
        # {"data": [...]} and similar single-key wrappers.
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON list of objects")
        obj = lists[0]
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(obj).__name__}")
    rows = []
    for i, item in enumerate(obj):
        if not isinstance(item, dict):
            raise DataError(f"{path} row {i}: expected an object, got {type(item).__name__}")
        rows.append(Row(item, f"{path} row {i}"))
    return rows


def _read_delimited(path: Path, limit: int | None, delimiter: str) -> list[Row]:
    import io

    from llmtune.data.csv_quotes import RecordLines, opened_on, records

    rows = []
    lines = RecordLines(io.StringIO(_read_text(path), newline=""))
    # TSV text often contains quote characters that are not CSV quoting (SST-2 does).
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    rows_read = records(reader, lines, path)
    try:
        header = next(rows_read, None)
        if not header:
            raise DataError(f"{path}: no header row; the first line must name the columns")
        header = [h.strip() for h in header]
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise DataError(f"{path}:1: column name(s) {', '.join(map(repr, repeated))} appear more than once "
                            f"in the header; rename them")
        for values in rows_read:
            lineno = reader.line_num
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise DataError(f"{path}:{lineno}: {len(values)} fields but the header has {len(header)} "
                                f"({', '.join(header)}); check delimiters in this line")
            rows.append(Row(dict(zip(header, values)), f"{path}:{lineno}"))
            if limit and len(rows) >= limit:
                break
    except csv.Error as exc:  # NUL bytes, a field over the size limit (often a quote never closed)
        raise DataError(f"{path}:{reader.line_num}: cannot parse this line ({exc})"
                        f"{opened_on(lines, reader)}") from None
    return rows


def _read_parquet(path: Path, limit: int | None) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    if limit:
        table = table.slice(0, limit)
    return [Row(r, f"{path} row {i}") for i, r in enumerate(table.to_pylist())]


def _read_txt(path: Path, limit: int | None) -> list[Row]:
    rows = []
    for lineno, line in enumerate(_read_text(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            rows.append(Row({"text": line}, f"{path}:{lineno}"))
        if limit and len(rows) >= limit:
            break
    return rows


_READERS = {
    "jsonl": _read_jsonl,
    "jsonl.gz": _read_jsonl_gz,
    "json": _read_json,
    "csv": lambda p, n: _read_delimited(p, n, ","),
    "tsv": lambda p, n: _read_delimited(p, n, "\t"),
    "parquet": _read_parquet,
    "txt": _read_txt,
}


def read_hub(name: str, subset: str | None, split: str, limit: int | None) -> list[Row]:
    try:
        from datasets import load_dataset

        ds = load_dataset(name, subset, split=split)
    except Exception as exc:  # datasets raises many types for missing/offline datasets
        raise DataError(f"hub dataset {name!r} ({subset or 'default'}, split {split!r}) could not be "
                        f"loaded: {exc}. Offline? Download it once, or use a local file.") from None
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    return [Row(r, f"{name}[{split}] row {i}") for i, r in enumerate(ds)]


def data_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes: the data part of cache keys and the manifest."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
