"""`llmtune query --store S --input queries.jsonl --out hits.jsonl`: many queries for one
start-up (the store opened and the encoder loaded once), searched in batches.

Input: .jsonl rows with the query in `text` (or `query`) and an optional `id`, or a .txt
file with one query per line. Output: one JSON row per query, in input order, with its
input `line`, `id` if given, the query and its hits. Resumable as `llmtune generate` is:
rows already in --out are kept and their queries skipped, new rows are appended as whole
lines after each batch (llmtune/jsonl_out.py), so a killed run loses at most the batch in
flight and never leaves half a row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmtune.errors import DataError

if TYPE_CHECKING:
    from llmtune.console import Reporter
    from llmtune.index.retrieve import Retriever

BATCH = 64
"""Queries per search request (and per flush of --out)."""
LOG_EVERY = 640
"""Without a terminal (no progress bar), a log line every this many queries."""


@dataclass
class Query:
    line: int
    text: str
    id: str | None = None


def read_queries(path: Path) -> list[Query]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--input {path}: no such file; give a .jsonl file (rows with a `text` field) or a .txt "
                        f"file (one query per line)")
    if path.suffix.lower() not in (".jsonl", ".txt"):
        raise DataError(f"--input {path}: use a .jsonl file (rows with a `text` field) or a .txt file (one query "
                        f"per line)")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    queries = [_parse(path, n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not queries:
        raise DataError(f"{path}: no queries in it")
    return queries


def _parse(path: Path, n: int, line: str) -> Query:
    if path.suffix.lower() == ".txt":
        return Query(n, line.strip())
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{n}: not a JSON object ({exc.msg}); write one object per line, e.g. "
                        f'{{"id": "q1", "text": "..."}}') from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{n}: a JSON object per line, not {type(row).__name__}")
    text = row.get("text", row.get("query"))
    if not isinstance(text, str):
        raise DataError(f"{path}:{n}: no query text; put it in a `text` (or `query`) field")
    if not text.strip():
        raise DataError(f"{path}:{n}: the query is empty")
    ident = row.get("id")
    return Query(n, text, None if ident is None else str(ident))


def run_batch(retriever: "Retriever", queries: list[Query], out: Path, *, k: int, mode: str, per: str,
              globs: list[str] | None, reporter: "Reporter") -> dict:
    """Search every query not yet in `out`; the run's summary."""
    from llmtune.index.documents import search_documents
    from llmtune.jsonl_out import ResumableJsonl

    t0 = time.perf_counter()
    with ResumableJsonl(out, key="line") as writer:
        _check_same_queries(out, queries, writer.done)
        todo = [q for q in queries if q.line not in writer.done]
        if len(todo) < len(queries):
            reporter.log(f"{out}: {len(queries) - len(todo)} of {len(queries)} queries already answered; "
                         f"searching the other {len(todo)}")
        with reporter.progress(len(queries), "query", completed=len(queries) - len(todo)) as advance:
            for start in range(0, len(todo), BATCH):
                part = todo[start:start + BATCH]
                texts = [q.text for q in part]
                found = search_documents(retriever, texts, k, mode, globs) if per == "document" else \
                    retriever.search(texts, k, mode, globs)
                writer.append([_row(q, hits, mode, per) for q, hits in zip(part, found)])
                writer.flush()
                advance(len(part))
                done = start + len(part)
                if not reporter.interactive and (done % LOG_EVERY == 0 or done == len(todo)):
                    rate = done / max(time.perf_counter() - t0, 1e-9)
                    reporter.log(f"query: {done} of {len(todo)} searched ({rate:.1f} queries/s)")
    seconds = time.perf_counter() - t0
    return {"queries": len(queries), "searched": len(todo), "kept": len(queries) - len(todo), "out": str(out),
            "mode": mode, "per": per, "k": k, "seconds": round(seconds, 3),
            "queries_per_second": round(len(todo) / seconds, 2) if todo and seconds > 0 else None}


def _row(q: Query, hits: list, mode: str, per: str) -> dict:
    row = {"line": q.line, **({"id": q.id} if q.id is not None else {}), "query": q.text, "mode": mode, "per": per,
           "hits": [h.to_dict() for h in hits]}
    return row


def _check_same_queries(out: Path, queries: list[Query], done: dict) -> None:
    """Rows kept from an earlier run must answer the same queries on the same lines."""
    for q in queries:
        row = done.get(q.line)
        if row is not None and row.get("query") != q.text:
            raise DataError(f"{out}: its row for line {q.line} answers {row.get('query')!r}, but line {q.line} of "
                            f"the input is now {q.text!r}; the input changed since. Write to another --out, or "
                            f"remove this one to start over")
