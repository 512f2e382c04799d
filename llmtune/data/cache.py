"""Tokenized examples cached on disk, keyed by everything that changes them.

An entry is `KEY.json` (the summary and how many examples each split has) beside
`KEY.train.arrow` / `KEY.eval.arrow` (the examples, data/arrow_store.py), read back
memory-mapped. The JSON is written last: an entry without it, or whose parts do not open,
is rebuilt, never trusted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llmtune import atomic
from llmtune.cache_root import cache_root

CACHE_VERSION = 3  # bump when the encoding code changes what it produces (3: Arrow files)
_REQUIRED = ("train", "eval", "summary")


def cache_dir() -> Path:
    return cache_root() / "tokenized"


def tokenizer_fingerprint(tok) -> str:
    h = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # Truncation/padding are per-call settings the tokenizer remembers after a call with
        # truncation=True: the same tokenizer must hash the same before and after use.
        state.pop("truncation", None)
        state.pop("padding", None)
        h.update(json.dumps(state, sort_keys=True).encode())
    else:
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    h.update(str(getattr(tok, "chat_template", None)).encode())
    h.update(json.dumps({k: str(v) for k, v in tok.special_tokens_map.items()}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _code_fingerprint() -> str:
    """The source of the modules that turn rows into ids: editing them invalidates the cache
    even when nobody remembers to bump CACHE_VERSION."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in ("encode.py", "readers.py", "csv_quotes.py", "pipeline.py", "chat_masks.py", "prompt_style.py",
                 "arrow_store.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def cache_key(**parts) -> str:
    payload = json.dumps({"v": CACHE_VERSION, "code": _code_fingerprint(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _split_path(key: str, split: str) -> Path:
    return cache_dir() / f"{key}.{split}.arrow"


def load_cached(key: str) -> dict | None:
    """{"train": Examples, "eval": Examples or [], "summary": {...}}, or None."""
    from llmtune.data.arrow_store import Examples

    path = cache_dir() / f"{key}.json"
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged cache entry is rebuilt, never trusted
    if not isinstance(value, dict) or not all(k in value for k in _REQUIRED):
        return None
    out = {"summary": value["summary"]}
    try:
        for split in ("train", "eval"):
            count = value[split]
            if not isinstance(count, int):
                return None
            out[split] = Examples.open(_split_path(key, split)) if count else []
            if len(out[split]) != count:
                return None
    except Exception:  # a missing or damaged Arrow file: pyarrow raises several types
        return None
    return out


class CacheWriter:
    """Writes one entry split by split as the examples are encoded. Best effort: a cache
    that cannot be written (read-only home, full disk) costs time on the next run, never
    the run itself; `ok` says whether the entry was written."""

    def __init__(self, key: str):
        self.key = key
        self.ok = True
        self.counts: dict[str, int] = {}
        try:
            cache_dir().mkdir(parents=True, exist_ok=True)
        except OSError:
            self.ok = False

    def write_split(self, split: str, chunks) -> None:
        """Write every chunk of examples (an iterable of lists of example dicts)."""
        from llmtune.data.arrow_store import ArrowFileWriter

        writer = ArrowFileWriter(_split_path(self.key, split))
        try:
            for chunk in chunks:
                writer.write(chunk)
            writer.close()
        except OSError:
            writer.abort()
            self.ok = False
            return
        self.counts[split] = writer.rows

    def finish(self, summary: dict) -> None:
        if not self.ok:
            return
        path = cache_dir() / f"{self.key}.json"
        try:  # readers see the old entry or the new one, never half
            atomic.write_text(path, json.dumps({"summary": summary, "train": self.counts.get("train", 0),
                                                "eval": self.counts.get("eval", 0)}))
        except OSError:
            self.ok = False
