"""Where llmtune keeps what it can rebuild (tokenized data, dequantized GGUF models, features):
`$LLMTUNE_CACHE`, else ~/.cache/llmtune. The one place that decides it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("LLMTUNE_CACHE") or Path.home() / ".cache" / "llmtune")
