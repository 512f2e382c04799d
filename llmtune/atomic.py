"""Atomic file writes: a reader (or a run killed half-way) sees the old file or the new one,
never half of one. Every file llmtune writes that someone may read while it is written, or
that must survive a kill, goes through here."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_name(path: Path) -> Path:
    """A sibling name on the same filesystem (so `os.replace` is atomic), unique per process."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` in one rename, on an
    exception it is removed and `path` is left as it was."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def replacing_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder name (not created; a killed run's leftover removed) to
    fill; on success it replaces the folder `path` (an old one removed first), on an
    exception it is removed and `path` is left as it was."""
    import shutil

    path = Path(path)
    tmp = temp_name(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj: Any) -> None:
    """Indented, sorted keys, one trailing newline: stable files that diff well."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (created if missing) for the block: two
    processes filling the same cache take turns. Without flock (Windows) it does nothing; the
    callers' write-then-rename still keeps what they write whole."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
