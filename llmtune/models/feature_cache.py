"""Embeddings of a dataset cached on disk, so a frozen encoder reads each text once.

Keyed by everything that changes the vectors: the model (name, revision, dtype, and the
size and time of a local model's weight files), the pooling, and a digest of the token ids
themselves (which already reflect the files, the columns, the tokenizer, max_length and
truncation; so changing the eval file does not throw away the training features).
Entries are plain .npy files under $LLMTUNE_CACHE/features/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from llmtune.atomic import replacing
from llmtune.cache_root import cache_root
from llmtune.data.cache import cache_key

CACHE_VERSION = 1  # bump when the embedding code changes what it produces


def features_dir() -> Path:
    return cache_root() / "features"


def model_fingerprint(name: str, revision: str | None, dtype: str) -> dict:
    """Identifies the weights: a local folder's weight files change when it is retrained."""
    from llmtune.models.load import resolve_source

    parts: dict = {"name": name, "revision": revision, "dtype": dtype}
    folder = Path(resolve_source(name)).expanduser()
    if folder.is_dir():
        parts["files"] = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()
                                if p.suffix in (".safetensors", ".bin"))
    return parts


def token_ids_digest(ids: list[list[int]]) -> str:
    import hashlib

    h = hashlib.sha256()
    for row in ids:
        h.update(json.dumps(row).encode())
        h.update(b"\n")
    return h.hexdigest()


def features_key(**parts) -> str:
    return cache_key(kind="features", features_version=CACHE_VERSION, **parts)


def cached_features(key: str, rows: int, compute: Callable[[], "object"]):
    """(float32 array of `rows` rows, hit). A missing, damaged or mis-sized entry is
    recomputed, never trusted."""
    import numpy as np

    path = features_dir() / f"{key}.npy"
    if path.exists():
        try:
            array = np.load(path, allow_pickle=False)
            if array.ndim == 2 and array.shape[0] == rows and array.dtype == np.float32:
                return array, True
        except (OSError, ValueError):
            pass
    array = np.ascontiguousarray(compute(), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "wb") as fh:  # readers see the old entry or the new one
        np.save(fh, array)
    return array, False
