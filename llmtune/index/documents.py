"""Hits grouped by source document, so that `-k` can count documents (`--per document`).

A document is a file, or one row of a table file (.jsonl/.csv/.tsv/.parquet: its `row=N` or
`ID_COLUMN=ID` locator); a PDF's pages are one document, its file. A document scores as its
best chunk (max-passage), so the top k documents are the first k distinct documents of the
chunk ranking. They are found by folding a deeper chunk list: k x FOLD chunks are fetched,
and if they hold fewer than k documents while the list was full, the search is asked again
four times deeper (up to MAX_DEPTH chunks), so the answer is the same as grouping every
chunk. Milvus's grouping search (`group_by_field`) would need one field naming the document,
which the store's chunks do not have (file and row are two fields), and could not group
llmtune's own BM25 or the fused hybrid list anyway.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmtune.index.retrieve import Hit, Retriever

PER = ("document", "chunk")
FOLD = 5
"""Chunks fetched per document asked for, at first (Cranfield: 2.2 chunks a document)."""
MAX_DEPTH = 16384
"""Milvus's largest top-k."""


@dataclass
class DocumentHit:
    """A document's best chunk (its fields as a chunk hit has them, so a document hit reads
    like a chunk hit) and every chunk of it the search found."""

    rank: int
    score: float
    source: str
    locator: str
    chunk: int
    start: int
    end: int
    text: str
    document: str
    """The document: its file, or `file#locator` for a table row."""
    chunks: list[dict] = field(default_factory=list)
    """The document's chunks in the ranking: {chunk, start, end, score, rank}."""

    def where(self) -> str:
        loc = f" {self.locator}" if self.locator else ""
        return f"{self.source}{loc} chars {self.start}-{self.end}"

    def to_dict(self) -> dict:
        return asdict(self)


def document_of(hit: "Hit") -> str:
    if not hit.locator or Path(hit.source).suffix.lower() == ".pdf":
        return hit.source
    return f"{hit.source}#{hit.locator}"


def fold(hits: list["Hit"], k: int) -> list[DocumentHit]:
    """The first k documents of a chunk ranking, each with its chunks found in it."""
    docs: dict[str, DocumentHit] = {}
    for hit in hits:
        name = document_of(hit)
        doc = docs.get(name)
        if doc is None:
            if len(docs) == k:
                continue  # a chunk of a document past the k-th: not reported
            doc = docs[name] = DocumentHit(len(docs) + 1, hit.score, hit.source, hit.locator, hit.chunk, hit.start,
                                           hit.end, hit.text, name)
        doc.chunks.append({"chunk": hit.chunk, "start": hit.start, "end": hit.end, "score": hit.score,
                           "rank": hit.rank})
    return list(docs.values())


def search_documents(retriever: "Retriever", queries: list[str], k: int, mode: str, globs: list[str] | None = None,
                     vectors=None) -> list[list[DocumentHit]]:
    """Top-k documents per query (see the module's docstring for how)."""
    if mode != "bm25" and vectors is None and queries:
        vectors = retriever.encoder.embed_queries(queries)  # once, whatever the retries
    out: list[list[DocumentHit] | None] = [None] * len(queries)
    todo = list(range(len(queries)))
    depth = min(MAX_DEPTH, max(k * FOLD, k))
    while todo:
        found = retriever.search([queries[i] for i in todo], depth, mode, globs,
                                 vectors=None if vectors is None else vectors[todo])
        again = []
        for i, hits in zip(todo, found):
            docs = fold(hits, k)
            if len(docs) < k and len(hits) >= depth and depth < MAX_DEPTH:
                again.append(i)  # a full list of too few documents: look deeper
            else:
                out[i] = docs
        todo, depth = again, min(MAX_DEPTH, depth * 4)
    return [docs or [] for docs in out]
