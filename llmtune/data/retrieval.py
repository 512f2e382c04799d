"""Retrieval data: the (query, positive[, negative]) pairs an encoder trains on, and the
queries, documents and judgments (qrels) a retrieval recipe is scored with. Every problem
names the file and row, and exits 2.

Ids are compared as strings (a JSON 7 and a CSV "7" are one id). Judgments of queries that
are not among the eval queries are ignored, so one qrels file serves several query splits;
a judgment naming a document that is not in the collection is an error, since it would be
scored as a miss that no system could avoid.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TYPE_CHECKING, overload

from llmtune.data.readers import Row, read_rows
from llmtune.errors import DataError

if TYPE_CHECKING:
    from llmtune.recipe.schema import DataSection, DataSource

QRELS_COLUMNS = ("query_id", "doc_id", "relevance")


@dataclass
class Pair:
    query: str
    positive: str
    negative: str | None
    where: str


@dataclass
class Collection:
    queries: dict[str, str]
    """Eval query id -> text, in file order (cut to the limit)."""
    documents: dict[str, str]
    """Document id -> text, in file order."""
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    """Query id -> {document id: relevance}, for the queries above only."""

    def fingerprint(self) -> str:
        """A hash of what is scored: the queries, the documents and their judgments."""
        digest = hashlib.sha256()
        for part in (self.queries, self.documents, self.qrels):
            digest.update(json.dumps(part, sort_keys=True).encode())
        return digest.hexdigest()[:16]


@overload
def _text(row: Row, column: str, what: str, key: str) -> str: ...
@overload
def _text(row: Row, column: str, what: str, key: str, *, required: bool) -> str | None: ...
def _text(row: Row, column: str, what: str, key: str, *, required: bool = True) -> str | None:
    if column not in row.data:
        if not required:
            return None
        raise DataError(f"{row.where}: no {column!r} column ({what}); the row has "
                        f"{', '.join(map(repr, row.data)) or 'no columns'}. Name yours with {key}")
    value = row.data[column]
    if value is None or (isinstance(value, str) and not value.strip()):
        if not required:
            return None
        raise DataError(f"{row.where}: {what} ({column!r}) is empty; fill it in or remove the row")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise DataError(f"{row.where}: {what} ({column!r}) must be text, not {type(value).__name__}")
    return str(value)


def read_pairs(source: "DataSource", columns: Any) -> list[Pair]:
    """Training pairs from `data.train` (`data.columns.query/positive/negative`)."""
    from llmtune.data.pipeline import read_source

    rows, _ = read_source(source)
    c = columns
    return [Pair(_text(r, c.query, "the query", "data.columns.query"),
                 _text(r, c.positive, "the positive text", "data.columns.positive"),
                 _text(r, c.negative, "the negative text", "data.columns.negative", required=False), r.where)
            for r in rows]


def read_collection(data: "DataSection", limit: int | None = None) -> Collection:
    """The eval queries (data.eval, first `limit`), the documents and the judgments."""
    from llmtune.data.pipeline import read_source

    spec = data.retrieval
    if spec is None or data.eval is None:
        raise DataError("this retrieval recipe has no evaluation: add data.eval (the queries) and "
                        "data.retrieval (documents and qrels)")
    id_key, text = spec.id_column, data.columns.text
    query_rows, _ = read_source(data.eval)
    queries = _by_id(query_rows[:limit] if limit else query_rows, id_key, text, "query", "data.columns.text")
    documents = read_documents(data)
    return Collection(queries, documents, _read_qrels(Path(spec.qrels), queries, documents))


def read_documents(data: "DataSection") -> dict[str, str]:
    """The collection of `data.retrieval.documents`: id -> text, in file order (a document
    may be empty: it can then never be found)."""
    spec = data.retrieval
    assert spec is not None
    return _by_id(read_rows(Path(spec.documents)), spec.id_column, data.columns.text, "document",
                  "data.columns.text", allow_empty=True)


def _by_id(rows: list[Row], id_key: str, text_key: str, what: str, hint: str, *,
           allow_empty: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for row in rows:
        ident = _text(row, id_key, f"the {what} id", "data.retrieval.id_column")
        body = _text(row, text_key, f"the {what} text", hint, required=not allow_empty) or ""
        if ident in seen:
            raise DataError(f"{row.where}: {what} id {ident!r} again (first at {seen[ident]}); ids must be unique")
        seen[ident] = row.where
        out[ident] = body
    return out


def _read_qrels(path: Path, queries: dict[str, str], documents: dict[str, str]) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for row in read_rows(path):
        qid, doc, grade = (_text(row, col, f"the judgment's {col}", "the qrels file's header") for col in QRELS_COLUMNS)
        if doc not in documents:
            raise DataError(f"{row.where}: document {doc!r} is not in the collection (data.retrieval.documents); "
                            f"judgments must name documents by their id there")
        if qid not in queries:
            continue  # a query of another split (or cut by eval.limit)
        try:
            value = float(grade)
        except ValueError:
            raise DataError(f"{row.where}: relevance {grade!r} is not a number (0: not relevant, 1 or more: "
                            f"relevant, higher is more)") from None
        if value != int(value):
            raise DataError(f"{row.where}: relevance {grade!r} must be a whole number")
        # trec_eval counts a grade of 0 or below as not relevant; a negative gain would corrupt nDCG.
        qrels.setdefault(qid, {})[doc] = max(0, int(value))
    return qrels
