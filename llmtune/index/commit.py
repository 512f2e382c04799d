"""One commit group of an `llmtune index` run: files read, cut, embedded and written in the
five kill-safe steps of sync.py, with BM25's statistics brought along.

Memory stays bounded by the commit group, not by the file: a file's pieces are made a block
of text at a time (`Chunker.iter_split`), and embedded and inserted `commit_chunks` at a time;
a file bigger than a group streams through on its own (its chunks are inserted hidden, so a
kill still leaves the old version, and the flip comes after its last chunk).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from llmtune.index.bm25 import TermDelta, chunk_vector
from llmtune.data.chunking import BLOCK_CHARS
from llmtune.index.formats import (Section, Unreadable, content_hash, finish_hash, kind_of, read_sections,
                                   stream_text)
from llmtune.index.store import MAX_TEXT_BYTES, FileState, Store, in_list

if TYPE_CHECKING:
    from llmtune.index.encoding import IndexEncoder
    from llmtune.index.progress import IndexProgress

SPLIT_BATCH = 256
"""Short sections (table rows) cut by one batched tokenizer call."""


@dataclass
class Job:
    source: str
    path: Path
    content_hash: str
    old: FileState | None
    chars: int
    """Characters of text in all sections (progress counts a file by them)."""
    pieces: Iterator
    """(section, chunking.Piece) in file order."""
    head: list = field(default_factory=list)
    """The pieces already made (all of them unless the file is bigger than a group)."""
    complete: bool = True
    chunks: int = 0
    consumed: float = 0.0
    """Fraction of the file's text embedded so far."""


def prepare(source: str, path: Path, old: FileState | None, enc: "IndexEncoder", tally, text_column: str,
            id_column: str | None, limit: int) -> Job | None:
    """The file's job with up to `limit` pieces made, or None if it is skipped."""
    try:
        digest, sections = _read(path, text_column, id_column)
    except OSError as exc:
        tally.skipped.append((source, f"cannot read it ({exc.strerror or exc})"))
        return None
    except Unreadable as exc:
        kept = f"; its {old.chunks} earlier chunks stay" if old is not None and old.version else ""
        tally.skipped.append((source, f"{exc}{kept}"))
        return None
    stream = _pieces(enc.chunker, sections)
    head = list(islice(stream, limit))
    more = next(stream, None)
    job = Job(source, path, digest, old, sum(s.chars for s in sections), stream, head, more is None)
    if more is not None:
        job.pieces = chain([more], stream)
    return job


def _read(path: Path, text_column: str, id_column: str | None) -> tuple[str, list[Section]]:
    """(content hash, sections); a plain-text file is streamed, never read whole."""
    if kind_of(path) == "text":
        digest = hashlib.sha256()
        sections = stream_text(path, digest)
        return finish_hash(digest, path, text_column, id_column), sections
    data = path.read_bytes()
    return (content_hash(data, path, text_column, id_column),
            read_sections(path, data, text_column=text_column, id_column=id_column))


def _pieces(chunker, sections: list[Section]) -> Iterator:
    batch: list[Section] = []
    for section in sections:
        if section.parts is not None:
            yield from _split_batch(chunker, batch)
            batch = []
            yield from ((section, p) for p in chunker.iter_split_stream(section.parts()))
            continue
        if len(section.text) > BLOCK_CHARS:
            yield from _split_batch(chunker, batch)
            batch = []
            yield from ((section, p) for p in chunker.iter_split(section.text))
            continue
        batch.append(section)
        if len(batch) >= SPLIT_BATCH:
            yield from _split_batch(chunker, batch)
            batch = []
    yield from _split_batch(chunker, batch)


def _split_batch(chunker, sections: list[Section]) -> Iterator:
    for section, pieces in zip(sections, chunker.split_many([s.text for s in sections])):
        yield from ((section, p) for p in pieces)


def commit(st: Store, enc: "IndexEncoder", group: list[Job], tally, part_size: int,
           progress: "IndexProgress") -> None:
    """The five steps of sync.py's docstring for a group of files, then the BM25 statistics."""
    versions = {j.source: f"{j.content_hash[:16]}-{secrets.token_hex(4)}" for j in group}
    olds = {j.source: j.old or FileState(j.source) for j in group}
    st.put_states([replace(olds[j.source], hidden=[versions[j.source]]) for j in group])  # 1
    delta = TermDelta()
    rows = _rows(group, versions)
    while part := list(islice(rows, part_size)):  # 2
        _write_part(st, enc, part, delta, tally, progress)
    t0 = time.perf_counter()
    old_versions = [olds[j.source].version for j in group if olds[j.source].version]
    flipped = [FileState(j.source, j.content_hash, versions[j.source],
                         [olds[j.source].version] if olds[j.source].version else [], j.chunks) for j in group]
    st.put_states(flipped)  # 3
    delete_versions(st, old_versions, delta)  # 4
    st.put_states([replace(s, hidden=[]) for s in flipped])  # 5
    delta.apply(st)
    st.settle()
    tally.seconds["insert"] += time.perf_counter() - t0
    for j in group:
        (tally.updated if olds[j.source].version else tally.added).append(j.source)
        progress.moved(max(0.0, 1.0 - j.consumed))  # the rest of the file (text without chunks)
    progress.committed()


def delete_versions(st: Store, versions: list[str], delta: TermDelta) -> None:
    """Delete the versions' chunks, taking their terms out of the statistics."""
    for start in range(0, len(versions), 1000):
        part = versions[start:start + 1000]
        delta.remove_stored(st.chunks_where(in_list("version", part), ["sparse"]))
        st.delete_versions(part)


def _rows(group: list[Job], versions: dict) -> Iterator[tuple]:
    """(job, version, chunk number, section, piece, fraction of the file's text) in file order."""
    for job in group:
        offsets, done = {}, 0
        for section, piece in chain(_drain(job.head), job.pieces):
            if id(section) not in offsets:
                offsets[id(section)] = done
                done += section.chars
            reached = (offsets[id(section)] + piece.end) / max(job.chars, 1)
            share = max(0.0, reached - job.consumed)
            job.consumed = max(job.consumed, reached)
            yield job, versions[job.source], job.chunks, section, piece, share
            job.chunks += 1


def _drain(items: list) -> Iterator:
    """The items in order, each let go of as it is handed out (a big file's first part is not
    kept while the rest of the file streams through)."""
    items.reverse()
    while items:
        yield items.pop()


def _write_part(st: Store, enc: "IndexEncoder", part: list[tuple], delta: TermDelta, tally,
                progress: "IndexProgress") -> None:
    t0 = time.perf_counter()

    def on_batch(indices: list[int]) -> None:
        progress.embedded(len(indices), sum(part[i][5] for i in indices))

    vectors = enc.embed_pieces([row[4] for row in part], on_batch)
    t1 = time.perf_counter()
    rows = []
    for (job, version, n, section, piece, _), vector in zip(part, vectors):
        row, dims = chunk_row(enc, job.source, version, n, section, piece, vector)
        rows.append(row)
        delta.add(dims)
    st.insert_chunks(rows)
    del rows, vectors  # in the store now; the flush below can give their memory back
    st.settle()
    tally.seconds["embed"] += t1 - t0
    tally.seconds["insert"] += time.perf_counter() - t1
    tally.chunks_written += len(part)


def chunk_row(enc: "IndexEncoder", source: str, version: str, n: int, section: Section, piece, vector
              ) -> tuple[dict, list[int]]:
    """(the chunk's row, its BM25 term dimensions)."""
    text = section.text[piece.start:piece.end] if piece.text is None else piece.text
    stored = text.encode()
    if len(stored) > MAX_TEXT_BYTES:  # only a window spanning a vast run of whitespace gets here
        text = stored[:MAX_TEXT_BYTES].decode(errors="ignore")
    sparse, dims = chunk_vector(enc.settings, text, len(piece.ids))
    file_key = hashlib.sha1(source.encode()).hexdigest()[:12]
    return {"id": f"{file_key}:{version}:{n}", "vector": vector, "text": text, "sparse": sparse, "source": source,
            "locator": section.locator, "chunk": n, "start": piece.start, "end": piece.end,
            "chunk_hash": hashlib.sha256(text.encode()).hexdigest()[:32], "version": version}, dims
