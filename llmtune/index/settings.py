"""What built a store, and the refusal when a command asks for something else.

Vectors from two models (or two poolings) are not comparable, and chunks cut two ways
would make one store answer differently for different files; so a store keeps the
settings it was created with, later runs inherit them, and a run that names other ones
ends with exit 2 saying what the store holds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmtune.errors import UserError

FORMAT = 2
"""Bumped when the layout of a store changes; an older llmtune refuses a newer store. Format 2:
BM25 computed by llmtune (analyzer, weights and statistics kept by the store; see bm25.py)."""
DEFAULT_MODEL = "minilm"
DEFAULT_CHUNK_TOKENS = 128
DEFAULT_OVERLAP = 32
DEFAULT_INDEX = {"index_type": "HNSW", "M": 16, "efConstruction": 200}
DEFAULT_EF = 64
DEFAULT_NPROBE = 16


@dataclass
class StoreSettings:
    model: str
    """The embedding model as `canonical_model` writes it (a local folder: its absolute path)."""
    pooling: str
    normalize: bool
    max_length: int
    """Tokens per text when embedding (queries longer than this are cut)."""
    chunk_tokens: int
    overlap: int
    dim: int
    index: dict = field(default_factory=lambda: dict(DEFAULT_INDEX))
    """The dense vector index (Milvus index type and build parameters)."""
    analyzer: dict = field(default_factory=lambda: {"language": "english", "stop_words": True,
                                                    "words": r"\w+ lower-cased"})
    """How text becomes BM25 terms (analyzer.py)."""
    bm25: dict = field(default_factory=lambda: {"k1": 1.2, "b": 0.75})
    """BM25's k1 and b (bm25.py)."""
    encoder: str = ""
    """When the model is a run directory: a fingerprint of its final/ (index/encoding.py), so a
    query with that run retrained since is refused."""
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> "StoreSettings":
        data = json.loads(text)
        if data.get("format", 0) > FORMAT:
            raise UserError(f"{where}: the store was written by a newer llmtune (store format {data['format']}, "
                            f"this one reads {FORMAT}); upgrade llmtune")
        if data.get("format", 0) < FORMAT:
            raise UserError(f"{where} was built by an earlier llmtune whose BM25 (Milvus's own, with statistics per "
                            f"segment) ranks wrongly once a store is updated; index the files into a new store "
                            f"(another --store or --collection)")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        return (f"model {self.model} ({self.pooling} pooling, {'normalised' if self.normalize else 'unnormalised'}, "
                f"{self.dim} dims), chunks of {self.chunk_tokens} tokens with {self.overlap} overlap, "
                f"BM25 language {self.analyzer['language']}")


def canonical_model(name: str) -> str:
    """A local folder or run directory by its absolute path (two spellings of one folder are one
    model); built-in names and hub ids as given."""
    path = Path(name).expanduser()
    if name.startswith((".", "/", "~")) or path.exists():
        return str(path.resolve())
    return name


def check_request(stored: StoreSettings, where: str, *, model: str | None = None, pooling: str | None = None,
                  chunk_tokens: int | None = None, overlap: int | None = None, language: str | None = None) -> None:
    """Exit 2 if an explicitly requested setting differs from the store's."""
    asked = {"--model": (canonical_model(model) if model else None, stored.model),
             "--language": (language.strip().lower() if language else None, stored.analyzer["language"]),
             "--pooling": (pooling, stored.pooling),
             "--chunk-tokens": (chunk_tokens, stored.chunk_tokens),
             "--overlap": (overlap, stored.overlap)}
    wrong = [f"{flag} {want} (the store has {have})" for flag, (want, have) in asked.items()
             if want is not None and want != have]
    if wrong:
        raise UserError(f"{where} was built with {stored.describe()}; this command asked for "
                        f"{'; '.join(wrong)}. Drop the option to use the store's settings, or index into a new "
                        f"store (another --store or --collection)")


def search_params(index: dict, k: int) -> dict:
    """Search-time parameters for the store's dense index at top-k: HNSW's candidate list
    (ef) or IVF's probed lists (nprobe); FLAT is exact and takes none."""
    kind = index["index_type"]
    if kind.startswith("HNSW"):
        return {"ef": max(DEFAULT_EF, k)}
    if kind.startswith("IVF"):
        return {"nprobe": DEFAULT_NPROBE}
    return {}
