"""Top-k chunks for a query: dense (cosine of normalised vectors), BM25 (llmtune's, with the
store's analyzer and statistics: bm25.py), or hybrid (reciprocal rank fusion of both lists:
fusion.py). Chunks with equal scores are listed by source and chunk number.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import asdict, dataclass

from llmtune.errors import UserError
from llmtune.index.bm25 import query_vectors
from llmtune.index.fusion import FUSION_DEPTH, fuse, in_order
from llmtune.index.settings import StoreSettings, check_request, search_params
from llmtune.index.store import Store, in_list, parse_location

MODES = ("dense", "bm25", "hybrid")


@dataclass
class Hit:
    rank: int
    score: float
    source: str
    locator: str
    chunk: int
    start: int
    end: int
    text: str

    def where(self) -> str:
        loc = f" {self.locator}" if self.locator else ""
        return f"{self.source}{loc} chars {self.start}-{self.end}"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_filters(filters: list[str]) -> list[str]:
    """`source=GLOB` flags -> the globs (several: a chunk matching any of them)."""
    globs = []
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep or key.strip() != "source" or not value:
            raise UserError(f"--filter {item!r}: write source=GLOB (e.g. source='*.md' or source='docs/*'); source "
                            f"is the only field to filter on")
        globs.append(value)
    return globs


def absolute_glob(pattern: str) -> str:
    """Sources are absolute paths: a relative pattern is taken from the current folder, and
    one that starts with a wildcard matches anywhere (`*` also matches `/`)."""
    if pattern.startswith(("/", "*", "?", "[")):
        return pattern
    if pattern.startswith("~"):
        return os.path.expanduser(pattern)
    return os.path.join(os.getcwd(), pattern)


def open_store(store: str, token: str | None, collection: str) -> tuple[Store, StoreSettings]:
    """An existing store and its settings (never creates one)."""
    loc = parse_location(store, token, collection)
    if loc.local is not None and not loc.local.exists():
        raise UserError(f"--store {store}: no such store; build it with `llmtune index PATH... --store {store}`")
    st = Store(loc)
    settings = st.settings()
    if settings is None or not st.client.has_collection(st.chunks_name):
        st.close()
        raise UserError(f"{loc.describe()}: nothing has been indexed into it; run `llmtune index PATH... "
                        f"--store {store}` first")
    return st, settings


class Retriever:
    def __init__(self, store: Store, settings: StoreSettings, *, model: str | None = None, encoder=None,
                 trust_remote_code: bool = False):
        if model is not None:
            check_request(settings, store.loc.describe(), model=model)
        self.store = store
        self.settings = settings
        self._encoder = encoder
        self._trust = trust_remote_code

    @property
    def encoder(self):
        if self._encoder is None:
            from llmtune.index.encoding import encoder_for

            self._encoder = encoder_for(self.settings, trust_remote_code=self._trust)
        return self._encoder

    def filter_expr(self, globs: list[str] | None = None) -> str | None:
        """Chunks a query may see: none of a hidden version, only sources matching a glob.
        None: no source matches, so nothing can be found."""
        parts = []
        hidden = self.store.hidden_versions()
        if hidden:
            parts.append(in_list("version", hidden, negate=True))
        if globs:
            patterns = [absolute_glob(g) for g in globs]
            sources = [s for s in self.store.file_states() if any(fnmatch.fnmatchcase(s, p) for p in patterns)]
            if not sources:
                return None
            parts.append(in_list("source", sources))
        return " and ".join(parts)

    def search(self, queries: list[str], k: int = 10, mode: str = "dense", globs: list[str] | None = None,
               vectors=None) -> list[list[Hit]]:
        """Top-k hits per query. `vectors`: the queries' embeddings, if already computed."""
        if mode not in MODES:
            raise UserError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
        if k < 1:
            raise UserError(f"-k {k}: must be at least 1")
        expr = self.filter_expr(globs)
        if expr is None or not queries:
            return [[] for _ in queries]
        return self.search_expr(queries, k, mode, expr, vectors)

    def search_expr(self, queries: list[str], k: int, mode: str, expr: str, vectors=None) -> list[list[Hit]]:
        if mode == "bm25":
            return self.search_bm25(queries, k, expr)
        if vectors is None:
            vectors = self.encoder.embed_queries(queries)
        if mode == "dense":
            return self.search_dense(vectors, k, expr)
        depth = max(k, FUSION_DEPTH)
        dense, bm25 = self.search_dense(vectors, depth, expr), self.search_bm25(queries, depth, expr)
        return [fuse({"dense": d, "bm25": b}, k) for d, b in zip(dense, bm25)]

    def search_dense(self, vectors, k: int, expr: str) -> list[list[Hit]]:
        params = search_params(self.settings.index, k)
        return [in_order(_hits(r)) for r in self.store.search_dense(vectors, k, expr, params)]

    def search_bm25(self, queries: list[str], k: int, expr: str) -> list[list[Hit]]:
        sparse = query_vectors(self.store, self.settings, queries)
        asked = [i for i, v in enumerate(sparse) if v]  # a query none of whose terms occurs finds nothing
        found = self.store.search_sparse([sparse[i] for i in asked], k, expr) if asked else []
        out: list[list[Hit]] = [[] for _ in queries]
        for i, results in zip(asked, found):
            out[i] = in_order(_hits(results, bm25=True))
        return out


def _hits(results, bm25: bool = False) -> list[Hit]:
    out = []
    for rank, r in enumerate(results, start=1):
        e = r["entity"]
        # BM25 is an inner product of sparse vectors: a server reports it positive, Milvus Lite as
        # its negation (a distance).
        score = abs(r["distance"]) if bm25 else r["distance"]
        out.append(Hit(rank, float(score), e["source"], e["locator"], int(e["chunk"]), int(e["start"]),
                       int(e["end"]), e["text"]))
    return out
