"""Tokenized examples cached on disk, keyed by everything that changes them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CACHE_VERSION = 1  # bump when the encoding code changes what it produces


def cache_dir() -> Path:
    root = os.environ.get("LLMTUNE_CACHE") or Path.home() / ".cache" / "llmtune"
    return Path(root) / "tokenized"


def tokenizer_fingerprint(tok) -> str:
    h = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tok.get_vocab().items())).encode())
    h.update(str(getattr(tok, "chat_template", None)).encode())
    h.update(json.dumps({k: str(v) for k, v in tok.special_tokens_map.items()}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def cache_key(**parts) -> str:
    payload = json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load_cached(key: str) -> dict | None:
    path = cache_dir() / f"{key}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged cache entry is rebuilt, never trusted


def store_cached(key: str, value: dict) -> None:
    path = cache_dir() / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)  # atomic: readers see the old entry or the new one, never half
