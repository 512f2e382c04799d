"""A JSONL output that a long job can be killed and rerun on: rows already written are kept and
known (by a key field), new rows are appended as complete lines only.

Each `flush()` writes the rows appended since the last one with a single write() of whole
lines, then fsyncs, so a killed job leaves whole lines behind. Should a last line still be torn
(a crash of the machine mid-write), reopening drops it, with a note in `torn`; an earlier
line that is not one of ours stops with path:line, and the file is left as it is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llmtune.errors import DataError


class ResumableJsonl:
    def __init__(self, path: Path, key: str):
        self.path, self.key = Path(path), key
        self.done: dict[Any, dict] = {}
        """Rows already in the file (and those appended since), by their key."""
        self.torn = False
        """Whether a torn last line was found (and dropped) on opening."""
        self._pending: list[str] = []
        self._read()
        self._fd: int | None = None  # opened at the first write: a job that fails first leaves no file


    def _read(self) -> None:
        if not self.path.exists():
            return
        if not self.path.is_file():
            raise DataError(f"{self.path}: not a file; name a .jsonl file to write")
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # everything after the last newline is a torn line
        if end < len(data):
            self.torn = True
            with open(self.path, "r+b") as f:
                f.truncate(end)
        for n, line in enumerate(data[:end].decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or self.key not in row:
                raise DataError(f"{self.path}:{n}: not a row this command wrote (a JSON object with {self.key!r}); "
                                f"write to another file, or move this one away")
            self.done[row[self.key]] = row

    def append(self, rows: list[dict]) -> None:
        """Queue rows (each with the key field) for the next flush."""
        for row in rows:
            self._pending.append(json.dumps(row, ensure_ascii=False) + "\n")
            self.done[row[self.key]] = row

    def flush(self) -> None:
        """Write the queued rows as one write() of whole lines, and fsync."""
        if not self._pending:
            return
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        data = "".join(self._pending).encode("utf-8")
        self._pending.clear()
        view = memoryview(data)
        while view:  # a regular file takes it in one go; loop in case it does not
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def close(self) -> None:
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ResumableJsonl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
