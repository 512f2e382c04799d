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

import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from llmtune.console import Reporter
from llmtune.errors import UserError
from llmtune.index.bm25 import STALE_FLAG, TermDelta, recount
from llmtune.index.commit import commit, delete_versions, prepare
from llmtune.index.formats import file_hash, kind_of
from llmtune.index.progress import index_progress
from llmtune.index.settings import check_request
from llmtune.index.store import MAX_SOURCE_BYTES, FileState, Store, parse_location

COMMIT_CHUNKS = 4096
"""Files are committed in groups of about this many chunks (a file is never split, so a big
file is a group of its own, streamed through in parts of this size): a killed run loses the
group in flight."""


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
                index: dict | None = None, language: str | None = None, commit_chunks: int = COMMIT_CHUNKS,
                batch_size: int = 32, trust_remote_code: bool = False, reporter: Reporter | None = None) -> dict:
    rep = reporter or Reporter(quiet=True)
    started = time.perf_counter()
    loc = parse_location(store, token, collection, create=True)
    files, roots = discover(paths)
    tally = Tally()
    opts = dict(model=model, pooling=pooling, chunk_tokens=chunk_tokens, overlap=overlap, index=index,
                language=language, batch_size=batch_size, trust_remote_code=trust_remote_code)
    with Store(loc) as st:
        settings = st.settings()
        enc = None
        if settings is None:
            enc = _load_encoder(None, tally, **opts)
            st.ensure(enc.settings)
            settings = enc.settings
        else:
            check_request(settings, loc.describe(), model=model, pooling=pooling, chunk_tokens=chunk_tokens,
                          overlap=overlap, language=language)
        repaired = recover(st)
        if repaired:
            rep.log(f"{loc.describe()}: finished {repaired} file(s) a killed run had left open")
        states = st.file_states()
        todo = plan(files, states, tally, text_column, id_column)
        gone = [s for s in states.values() if _under(s.source, roots) and s.source not in files]
        if todo or gone:
            st.set_flag(STALE_FLAG, True)  # cleared below; a killed run leaves it for the next to recount
        if todo:
            # An unchanged re-run never loads the model: only new or changed files need it.
            enc = enc or _load_encoder(settings, tally, **opts)
            rep.log(f"indexing {len(todo)} new or changed file(s) into {loc.describe()} ({settings.describe()})")
            _run_jobs(st, enc, todo, states, tally, rep, commit_chunks, text_column, id_column)
        remove(st, gone)
        tally.removed = [s.source for s in gone]
        if todo or gone:
            st.set_flag(STALE_FLAG, False)
        total = st.count_chunks()
        t0 = time.perf_counter()
    tally.seconds["close"] += time.perf_counter() - t0  # Milvus Lite flushes and builds indexes on close
    for source, reason in tally.skipped:
        rep.warn(f"{source}: skipped, {reason}")
    rep.log(f"index: {tally.line()}; {total} chunks in {loc.describe()}")
    return _summary(loc, settings, tally, total, time.perf_counter() - started)


def _load_encoder(stored, tally: Tally, *, model, pooling, chunk_tokens, overlap, index, language, batch_size,
                  trust_remote_code):
    """The store's encoder (`stored`), or a new store's from the options."""
    from llmtune.index.analyzer import analyzer_settings
    from llmtune.index.encoding import encoder_for, load_index_encoder
    from llmtune.index.settings import DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL, DEFAULT_OVERLAP

    t0 = time.perf_counter()
    if stored is not None:
        enc = encoder_for(stored, batch_size=batch_size, trust_remote_code=trust_remote_code)
    else:
        enc = load_index_encoder(model or DEFAULT_MODEL, pooling=pooling,
                                 chunk_tokens=chunk_tokens or DEFAULT_CHUNK_TOKENS,
                                 overlap=DEFAULT_OVERLAP if overlap is None else overlap, index=index,
                                 analyzer=analyzer_settings(language), batch_size=batch_size,
                                 trust_remote_code=trust_remote_code)
    tally.seconds["load"] += time.perf_counter() - t0
    return enc


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
            digest = file_hash(path, text_column, id_column)
        except OSError as exc:
            tally.skipped.append((source, f"cannot read it ({exc.strerror or exc})"))
            continue
        old = states.get(source)
        if old is not None and old.version and old.content_hash == digest:
            tally.unchanged += 1
        else:
            todo.append((source, path))
    return todo


def _run_jobs(st: Store, enc, todo, states, tally: Tally, rep: Reporter, commit_chunks: int, text_column: str,
              id_column: str | None) -> None:
    """Files into groups of about `commit_chunks` chunks; a file bigger than that is a group
    of its own, streamed through in parts."""
    group: list = []
    pending = 0
    with index_progress(rep, len(todo)) as progress:
        for source, path in todo:
            t0 = time.perf_counter()
            job = prepare(source, path, states.get(source), enc, tally, text_column, id_column, commit_chunks)
            tally.seconds["parse"] += time.perf_counter() - t0
            if job is None:
                progress.skip()
                continue
            if not job.complete and group:
                commit(st, enc, group, tally, commit_chunks, progress)
                group, pending = [], 0
            group.append(job)
            pending += len(job.head)
            if pending >= commit_chunks or not job.complete:
                commit(st, enc, group, tally, commit_chunks, progress)
                group, pending = [], 0
        if group:
            commit(st, enc, group, tally, commit_chunks, progress)


def remove(st: Store, gone: list[FileState]) -> None:
    """Files no longer on disk: hide their chunks, delete them, drop their state rows."""
    if not gone:
        return
    st.put_states([FileState(s.source, s.content_hash, "", [s.version] if s.version else [], s.chunks) for s in gone])
    delta = TermDelta()
    delete_versions(st, [s.version for s in gone if s.version], delta)
    st.drop_states([s.source for s in gone])
    delta.apply(st)


def recover(st: Store) -> int:
    """Finish what a killed run left: delete hidden versions' chunks, settle the state rows,
    and recount BM25's statistics if that run had begun to change them."""
    open_states = st.file_states("n_hidden > 0")
    if open_states:
        st.delete_versions([v for s in open_states.values() for v in s.hidden])
        st.put_states([replace(s, hidden=[]) for s in open_states.values() if s.version])
        st.drop_states([s.source for s in open_states.values() if not s.version])
    if st.flag(STALE_FLAG):
        recount(st)
        st.set_flag(STALE_FLAG, False)
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
