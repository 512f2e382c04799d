"""`llmtune index`: bring a store in line with the files under some paths, incrementally.

A file whose content hash is the one the store holds is not read again; a changed file's
chunks are replaced; a file that is gone (under a path of this run) loses its chunks; an
unreadable or unsupported file is reported, counted and left as it was.

Kill-safety. Every chunk carries its file's *version* (content hash + a random suffix), and
each file's state row names the version queries see plus the versions they must not see
(`hidden`). Files are committed in groups, each in five steps:
  1. state rows: the new versions become hidden;
  2. the new chunks are inserted (any number of batches: all hidden);
  3. state rows flip: the new version is the visible one, the old one hidden;
  4. the old versions' chunks are deleted;
  5. state rows: nothing hidden.
Each step is one Milvus write that lands whole, so a run killed at any point leaves every
file with exactly one visible version (old or new), never half of one; queries filter out
the hidden ones, and the next run deletes them before it starts and redoes the unfinished
files (their stored hash is still the old one).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from llmtune.console import Reporter
from llmtune.errors import UserError
from llmtune.index.formats import Section, Unreadable, kind_of, read_sections
from llmtune.index.store import MAX_SOURCE_BYTES, MAX_TEXT_BYTES, FileState, Store, parse_location

COMMIT_CHUNKS = 4096
"""Files are committed in groups of about this many chunks (a file is never split, so a big
file is a group of its own): a killed run loses the group in flight."""


@dataclass
class Job:
    path: Path
    source: str
    content_hash: str
    old: FileState | None
    sections: list[Section]
    pieces: list[tuple[Section, object]] = field(default_factory=list)
    """(section, chunking.Piece) in file order."""


@dataclass
class Tally:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks_written: int = 0
    seconds: Counter = field(default_factory=Counter)

    def line(self) -> str:
        reasons = Counter(_reason_kind(r) for _, r in self.skipped)
        why = f" ({', '.join(f'{n} {k}' for k, n in reasons.most_common())})" if reasons else ""
        return (f"{len(self.added)} added, {len(self.updated)} updated, {len(self.removed)} removed, "
                f"{self.unchanged} unchanged, {len(self.skipped)} skipped{why}")


def index_paths(paths: list[Path], store: str, *, token: str | None = None, collection: str = "llmtune",
                model: str | None = None, pooling: str | None = None, chunk_tokens: int | None = None,
                overlap: int | None = None, text_column: str = "text", id_column: str | None = None,
                index: dict | None = None, commit_chunks: int = COMMIT_CHUNKS, batch_size: int = 32,
                trust_remote_code: bool = False, reporter: Reporter | None = None) -> dict:
    from llmtune.index.encoding import encoder_for, load_index_encoder
    from llmtune.index.settings import DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL, DEFAULT_OVERLAP, check_request

    rep = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    loc = parse_location(store, token, collection)
    files, roots = discover(paths)
    tally = Tally()
    with Store(loc) as st:
        stored = st.settings()
        t0 = time.perf_counter()
        if stored is not None:
            check_request(stored, loc.describe(), model=model, pooling=pooling, chunk_tokens=chunk_tokens,
                          overlap=overlap)
            enc = encoder_for(stored, batch_size=batch_size, trust_remote_code=trust_remote_code)
        else:
            enc = load_index_encoder(model or DEFAULT_MODEL, pooling=pooling,
                                     chunk_tokens=chunk_tokens or DEFAULT_CHUNK_TOKENS,
                                     overlap=DEFAULT_OVERLAP if overlap is None else overlap, index=index,
                                     batch_size=batch_size, trust_remote_code=trust_remote_code)
        tally.seconds["load"] += time.perf_counter() - t0
        st.ensure(enc.settings)
        repaired = recover(st)
        if repaired:
            rep.log(f"{loc.describe()}: finished {repaired} file(s) a killed run had left open")
        states = st.file_states()
        todo = plan(files, states, tally, text_column, id_column)
        gone = [s for s in states.values() if _under(s.source, roots) and s.source not in files]
        rep.log(f"indexing {len(todo)} new or changed file(s) into {loc.describe()} "
                f"({enc.settings.describe()})")
        _run_jobs(st, enc, todo, states, tally, rep, commit_chunks, text_column, id_column)
        remove(st, gone)
        tally.removed = [s.source for s in gone]
        total = st.count_chunks()
        t0 = time.perf_counter()
    tally.seconds["close"] += time.perf_counter() - t0  # Milvus Lite flushes and builds indexes on close
    for source, reason in tally.skipped:
        rep.warn(f"{source}: skipped, {reason}")
    rep.log(f"index: {tally.line()}; {total} chunks in {loc.describe()}")
    return _summary(loc, enc.settings, tally, total, time.perf_counter() - started)


def discover(paths: list[Path]) -> tuple[dict[str, Path], list[str]]:
    """({source: path} of every file under the paths, the paths as absolute roots)."""
    files: dict[str, Path] = {}
    roots = []
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise UserError(f"{given}: no such file or folder")
        path = path.resolve()
        roots.append(str(path))
        if path.is_file():
            files[str(path)] = path
            continue
        for folder, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, .venv, ...
            for name in sorted(names):
                if not name.startswith("."):
                    files[os.path.join(folder, name)] = Path(folder, name)
    return files, roots


def plan(files: dict[str, Path], states: dict[str, FileState], tally: Tally, text_column: str,
         id_column: str | None) -> list[tuple[str, Path]]:
    """The files to (re)index; the rest are counted unchanged or skipped."""
    todo = []
    for source, path in files.items():
        if kind_of(path) is None:
            tally.skipped.append((source, f"unsupported file type {path.suffix or '(no suffix)'!r}"))
            continue
        if len(source.encode()) > MAX_SOURCE_BYTES:
            tally.skipped.append((source, f"path longer than {MAX_SOURCE_BYTES} bytes"))
            continue
        try:
            digest = content_hash(path.read_bytes(), path, text_column, id_column)
        except OSError as exc:
            tally.skipped.append((source, f"cannot read it ({exc.strerror or exc})"))
            continue
        old = states.get(source)
        if old is not None and old.version and old.content_hash == digest:
            tally.unchanged += 1
        else:
            todo.append((source, path))
    return todo


def content_hash(data: bytes, path: Path, text_column: str, id_column: str | None) -> str:
    h = hashlib.sha256(data)
    if kind_of(path) == "table":  # other columns make other chunks from the same bytes
        h.update(f"\0text_column={text_column}\0id_column={id_column}".encode())
    return h.hexdigest()


def _run_jobs(st: Store, enc, todo, states, tally: Tally, rep: Reporter, commit_chunks: int, text_column: str,
              id_column: str | None) -> None:
    group: list[Job] = []
    pending = done = 0
    with rep.progress(len(todo), "index") as advance:
        for source, path in todo:
            t0 = time.perf_counter()
            job = _prepare(source, path, states.get(source), enc, tally, text_column, id_column)
            tally.seconds["parse"] += time.perf_counter() - t0
            if job is None:
                advance(1)
                continue
            group.append(job)
            pending += len(job.pieces)
            if pending >= commit_chunks:
                done += _commit_logged(st, enc, group, tally, rep, commit_chunks, advance, done, len(todo))
                group, pending = [], 0
        if group:
            _commit_logged(st, enc, group, tally, rep, commit_chunks, advance, done, len(todo))


def _commit_logged(st, enc, group, tally, rep, commit_chunks, advance, done, total) -> int:
    commit(st, enc, group, tally, commit_chunks)
    advance(len(group), chunks=tally.chunks_written)
    if not rep.interactive:
        rep.log(f"committed {done + len(group)}/{total} file(s), {tally.chunks_written} chunks so far")
    return len(group)


def _prepare(source: str, path: Path, old: FileState | None, enc, tally: Tally, text_column: str,
             id_column: str | None) -> Job | None:
    try:
        data = path.read_bytes()
        sections = read_sections(path, data, text_column=text_column, id_column=id_column)
    except OSError as exc:
        tally.skipped.append((source, f"cannot read it ({exc.strerror or exc})"))
        return None
    except Unreadable as exc:
        kept = f"; its {old.chunks} earlier chunks stay" if old is not None and old.version else ""
        tally.skipped.append((source, f"{exc}{kept}"))
        return None
    job = Job(path, source, content_hash(data, path, text_column, id_column), old, sections)
    for section, pieces in zip(sections, enc.chunker.split_many([s.text for s in sections])):
        job.pieces.extend((section, p) for p in pieces)
    return job


def commit(st: Store, enc, group: list[Job], tally: Tally, commit_chunks: int) -> None:
    """The five steps of the module docstring for a group of files."""
    versions = {j.source: f"{j.content_hash[:16]}-{secrets.token_hex(4)}" for j in group}
    olds = {j.source: j.old or FileState(j.source) for j in group}
    st.put_states([replace(olds[j.source], hidden=[versions[j.source]]) for j in group])  # 1
    rows = [(j, n, section, piece) for j in group for n, (section, piece) in enumerate(j.pieces)]
    for start in range(0, len(rows), commit_chunks):  # 2
        part = rows[start:start + commit_chunks]
        t0 = time.perf_counter()
        vectors = enc.embed_pieces([piece for _, _, _, piece in part])
        t1 = time.perf_counter()
        st.insert_chunks([_chunk_row(j.source, versions[j.source], n, sec, p, v)
                          for (j, n, sec, p), v in zip(part, vectors)])
        tally.seconds["embed"] += t1 - t0
        tally.seconds["insert"] += time.perf_counter() - t1
        tally.chunks_written += len(part)
    t0 = time.perf_counter()
    old_versions = [olds[j.source].version for j in group if olds[j.source].version]
    flipped = [FileState(j.source, j.content_hash, versions[j.source],
                         [olds[j.source].version] if olds[j.source].version else [], len(j.pieces)) for j in group]
    st.put_states(flipped)  # 3
    st.delete_versions(old_versions)  # 4
    st.put_states([replace(s, hidden=[]) for s in flipped])  # 5
    tally.seconds["insert"] += time.perf_counter() - t0
    for j in group:
        (tally.updated if olds[j.source].version else tally.added).append(j.source)


def _chunk_row(source: str, version: str, n: int, section: Section, piece, vector) -> dict:
    text = section.text[piece.start:piece.end]
    stored = text.encode()
    if len(stored) > MAX_TEXT_BYTES:  # only a window spanning a vast run of whitespace gets here
        text = stored[:MAX_TEXT_BYTES].decode(errors="ignore")
    file_key = hashlib.sha1(source.encode()).hexdigest()[:12]
    return {"id": f"{file_key}:{version}:{n}", "vector": vector, "text": text, "source": source,
            "locator": section.locator, "chunk": n, "start": piece.start, "end": piece.end,
            "chunk_hash": hashlib.sha256(text.encode()).hexdigest()[:32], "version": version}


def remove(st: Store, gone: list[FileState]) -> None:
    """Files no longer on disk: hide their chunks, delete them, drop their state rows."""
    if not gone:
        return
    st.put_states([FileState(s.source, s.content_hash, "", [s.version] if s.version else [], s.chunks) for s in gone])
    st.delete_versions([s.version for s in gone if s.version])
    st.drop_states([s.source for s in gone])


def recover(st: Store) -> int:
    """Finish what a killed run left: delete hidden versions' chunks, settle the state rows."""
    open_states = st.file_states("n_hidden > 0")
    if not open_states:
        return 0
    st.delete_versions([v for s in open_states.values() for v in s.hidden])
    st.put_states([replace(s, hidden=[]) for s in open_states.values() if s.version])
    st.drop_states([s.source for s in open_states.values() if not s.version])
    return len(open_states)


def _under(source: str, roots: list[str]) -> bool:
    return any(source == r or source.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def _reason_kind(reason: str) -> str:
    """The kind of a skip reason, for the summary's counts: its first clause, without a
    leading `line N:` (which says where, not why)."""
    reason = re.sub(r"^(line|row) \d+: ", "", reason)
    return reason.split(" (")[0].split(";")[0].split(":")[0]


def _summary(loc, settings, tally: Tally, total: int, seconds: float) -> dict:
    return {"store": loc.describe(), "settings": settings.__dict__, "added": len(tally.added),
            "updated": len(tally.updated), "removed": len(tally.removed), "unchanged": tally.unchanged,
            "skipped": [{"source": s, "reason": r} for s, r in tally.skipped],
            "chunks_written": tally.chunks_written, "chunks_in_store": total,
            "seconds": {k: round(v, 3) for k, v in sorted(tally.seconds.items())} | {"total": round(seconds, 3)}}
