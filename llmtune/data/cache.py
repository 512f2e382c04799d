"""Tokenized examples cached on disk, keyed by everything that changes them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CACHE_VERSION = 2  # bump when the encoding code changes what it produces
_REQUIRED = ("train", "eval", "summary")


def cache_dir() -> Path:
    root = os.environ.get("LLMTUNE_CACHE") or Path.home() / ".cache" / "llmtune"
    return Path(root) / "tokenized"


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
    for name in ("encode.py", "readers.py", "pipeline.py", "chat_masks.py", "prompt_style.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def cache_key(**parts) -> str:
    payload = json.dumps({"v": CACHE_VERSION, "code": _code_fingerprint(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load_cached(key: str) -> dict | None:
    path = cache_dir() / f"{key}.json"
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged cache entry is rebuilt, never trusted
    if not isinstance(value, dict) or not all(k in value for k in _REQUIRED):
        return None
    return value


def store_cached(key: str, value: dict) -> None:
    """Best effort: a cache that cannot be written (read-only home, full disk) costs time
    on the next run, never the run itself."""
    path = cache_dir() / f"{key}.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)  # atomic: readers see the old entry or the new one, never half
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
