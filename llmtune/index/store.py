"""The Milvus side of a store: one client, three collections, every call the index needs.

`--store` is a local path ending in `.db` (Milvus Lite: embedded, on disk, no server) or a
server URI (`http://host:19530`, with `--token` for an authenticated server). Both go
through pymilvus's `MilvusClient` with the same calls, so moving to a server or a cluster
changes the flag and nothing else.

A store named C (`--collection`, default `llmtune`) is four collections:
- `C`: one row per chunk: dense vector, text, BM25 sparse vector (computed by llmtune, see
  bm25.py), source path, locator, chunk number, character offsets, content hash, version;
- `C_files`: one row per indexed file: its content hash, committed version and the versions
  whose chunks are in `C` but must not be seen (see `sync`);
- `C_terms`: BM25's statistics: the number of chunks, and per term the chunks holding it;
- `C_meta`: the `StoreSettings` that built the store, and flags (statistics being updated).
Milvus wants a vector field in every collection, so the small ones carry a 2-dim pad.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from llmtune.errors import UserError
from llmtune.index.settings import StoreSettings

SERVER_SCHEMES = ("http://", "https://", "tcp://")
CHUNK_OUTPUT = ["source", "locator", "chunk", "start", "end", "text", "version"]
MAX_TEXT_BYTES = 65535  # Milvus's VARCHAR limit
MAX_SOURCE_BYTES = 4096
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,180}$")
_PAD = [0.0, 0.0]


@dataclass
class Location:
    uri: str
    token: str | None
    collection: str
    local: Path | None
    """The Milvus Lite folder, or None for a server."""

    def describe(self) -> str:
        where = f"store {self.local}" if self.local is not None else f"store {self.uri}"
        return where if self.collection == "llmtune" else f"{where} (collection {self.collection})"


STORE_MARKS = ("LOCK", "collections", "databases")
"""What Milvus Lite keeps in a store folder."""


def parse_location(store: str, token: str | None = None, collection: str = "llmtune", create: bool = False
                   ) -> Location:
    """Where a store is. A local folder that exists must be a Milvus Lite store (an empty one
    too, when `create`): nothing is ever written into someone's other folder."""
    if not _NAME.match(collection):
        raise UserError(f"--collection {collection!r}: use letters, digits and underscores, starting with a letter")
    if store.startswith(SERVER_SCHEMES):
        return Location(store, token, collection, None)
    path = Path(store).expanduser()
    if path.suffix != ".db":
        raise UserError(f"--store {store}: a local store is a path ending in .db (Milvus Lite, e.g. docs.db); "
                        f"a Milvus server is a URI such as http://127.0.0.1:19530")
    path = path.resolve()
    if not path.parent.is_dir():
        raise UserError(f"--store {store}: the folder {path.parent} does not exist; create it first")
    if path.exists() and not path.is_dir():
        raise UserError(f"--store {store}: {path} is a file, not a Milvus Lite store (a folder); pick another name")
    if token:
        raise UserError("--token applies to a Milvus server; a local .db store has no authentication")
    if path.is_dir() and not any((path / mark).exists() for mark in STORE_MARKS):
        if not create or any(path.iterdir()):
            raise UserError(f"--store {store}: the folder {path} exists but is not a Milvus Lite store (it has no "
                            f"LOCK, collections/ or databases/); pick another path, llmtune writes nothing into it")
    return Location(str(path), None, collection, path)


@dataclass
class FileState:
    source: str
    content_hash: str = ""
    version: str = ""
    """The version whose chunks queries see ("" before the first commit)."""
    hidden: list[str] = field(default_factory=list)
    """Versions whose chunks are in the store but not to be seen: a new version being
    written, or an old one being deleted."""
    chunks: int = 0

    def row(self) -> dict:
        return {"id": self.source, "content_hash": self.content_hash, "version": self.version,
                "hidden": " ".join(self.hidden), "n_hidden": len(self.hidden), "chunks": self.chunks, "pad": _PAD}

    @classmethod
    def from_row(cls, row: dict) -> "FileState":
        return cls(row["id"], row["content_hash"], row["version"], row["hidden"].split(), int(row["chunks"]))


def quote(value: str) -> str:
    """A Milvus filter string literal (the escapes both Milvus and Milvus Lite read)."""
    if any(ord(c) < 32 and c not in "\n\r\t" for c in value):
        raise UserError(f"{value!r}: control characters cannot be matched in a store filter")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + escaped.replace("\t", "\\t") + '"'


def in_list(field_name: str, values, negate: bool = False) -> str:
    return f"{field_name} {'not in' if negate else 'in'} [{', '.join(quote(v) for v in values)}]"


class Store:
    def __init__(self, location: Location):
        self.loc = location
        self.chunks_name = location.collection
        self.files_name = f"{location.collection}_files"
        self.meta_name = f"{location.collection}_meta"
        self.terms_name = f"{location.collection}_terms"
        self.client = _connect(location)
        for name in (self.meta_name, self.files_name, self.terms_name, self.chunks_name):
            # A reopened collection starts released; Milvus searches only loaded ones.
            if self.client.has_collection(name):
                self.client.load_collection(name)

    # -- settings --------------------------------------------------------------------------
    def settings(self) -> StoreSettings | None:
        """The store's settings, or None if nothing was ever indexed into it."""
        if not self.client.has_collection(self.meta_name):
            if self.client.has_collection(self.chunks_name):
                raise UserError(f"{self.loc.describe()}: collection {self.chunks_name!r} exists but was not made by "
                                f"llmtune (no {self.meta_name!r}); pick another --collection")
            return None
        rows = self.client.query(self.meta_name, filter='id == "settings"', output_fields=["value"])
        return StoreSettings.from_json(rows[0]["value"], self.loc.describe()) if rows else None

    def ensure(self, settings: StoreSettings) -> None:
        """Make whichever of the three collections is missing (a killed first run may have
        made some), and record `settings` unless the store already has its own."""
        from pymilvus import DataType, MilvusClient

        c = self.client
        if not c.has_collection(self.chunks_name):
            s = MilvusClient.create_schema(auto_id=False)
            s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=128)
            s.add_field("vector", DataType.FLOAT_VECTOR, dim=settings.dim)
            s.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
            s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            s.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_BYTES)
            s.add_field("locator", DataType.VARCHAR, max_length=512)
            for name in ("chunk", "start", "end"):
                s.add_field(name, DataType.INT64)
            s.add_field("chunk_hash", DataType.VARCHAR, max_length=64)
            s.add_field("version", DataType.VARCHAR, max_length=64)
            index = c.prepare_index_params()
            params = {k: v for k, v in settings.index.items() if k != "index_type"}
            index.add_index(field_name="vector", index_type=settings.index["index_type"], metric_type="IP",
                            params=params)
            index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
            c.create_collection(self.chunks_name, schema=s, index_params=index, consistency_level="Strong")
        self._small_collection(self.files_name, [("content_hash", 64), ("version", 64), ("hidden", 4096)],
                               ["n_hidden", "chunks"])
        self._small_collection(self.terms_name, [], ["df"], key=DataType.INT64)
        # Written last: a store whose settings row exists has all three collections.
        self._small_collection(self.meta_name, [("value", 65535)], [])
        if not c.query(self.meta_name, filter='id == "settings"', output_fields=["id"]):
            c.upsert(self.meta_name, [{"id": "settings", "value": settings.to_json(), "pad": _PAD}])

    def _small_collection(self, name: str, strings: list[tuple[str, int]], ints: list[str], key=None) -> None:
        from pymilvus import DataType, MilvusClient

        if self.client.has_collection(name):
            return
        s = MilvusClient.create_schema(auto_id=False)
        if key is None:
            s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_SOURCE_BYTES)
        else:
            s.add_field("id", key, is_primary=True)
        for col, length in strings:
            s.add_field(col, DataType.VARCHAR, max_length=length)
        for col in ints:
            s.add_field(col, DataType.INT64)
        s.add_field("pad", DataType.FLOAT_VECTOR, dim=len(_PAD))
        index = self.client.prepare_index_params()
        index.add_index(field_name="pad", index_type="FLAT", metric_type="L2")
        self.client.create_collection(name, schema=s, index_params=index, consistency_level="Strong")

    # -- per-file state --------------------------------------------------------------------
    def file_states(self, expr: str = "") -> dict[str, FileState]:
        it = self.client.query_iterator(self.files_name, batch_size=4096, filter=expr,
                                        output_fields=["id", "content_hash", "version", "hidden", "chunks"])
        out = {}
        try:
            while batch := it.next():
                out.update((row["id"], FileState.from_row(row)) for row in batch)
        finally:
            it.close()
        return out

    def hidden_versions(self) -> list[str]:
        """Versions no query may see; none unless an index run is under way or was killed."""
        rows = self.client.query(self.files_name, filter="n_hidden > 0", output_fields=["hidden"], limit=16384)
        return sorted({v for row in rows for v in row["hidden"].split()})

    def put_states(self, states: list[FileState]) -> None:
        if states:
            self.client.upsert(self.files_name, [s.row() for s in states])

    def drop_states(self, sources: list[str]) -> None:
        for part in _slices(sources, 1000):
            self.client.delete(self.files_name, filter=in_list("id", part))

    # -- flags and BM25 statistics -----------------------------------------------------------
    def flag(self, name: str) -> bool:
        return bool(self.client.query(self.meta_name, filter=f"id == {quote(name)}", output_fields=["id"]))

    def set_flag(self, name: str, on: bool) -> None:
        if on:
            self.client.upsert(self.meta_name, [{"id": name, "value": "1", "pad": _PAD}])
        else:
            self.client.delete(self.meta_name, filter=f"id == {quote(name)}")

    def term_dfs(self, dims: list[int]) -> dict[int, int]:
        """{dimension: chunks holding it} for the dimensions the store has seen."""
        out: dict[int, int] = {}
        for part in _slices(dims, 1000):
            rows = self.client.query(self.terms_name, filter=f"id in [{', '.join(map(str, part))}]",
                                     output_fields=["df"], limit=len(part))
            out.update((int(r["id"]), int(r["df"])) for r in rows)
        return out

    def put_term_dfs(self, dfs: dict[int, int]) -> None:
        rows = [{"id": d, "df": n, "pad": _PAD} for d, n in dfs.items() if n > 0]
        for part in _slices(rows, 4096):
            self.client.upsert(self.terms_name, part)
        for part in _slices([d for d, n in dfs.items() if n <= 0], 1000):
            self.client.delete(self.terms_name, filter=f"id in [{', '.join(map(str, part))}]")

    def reset_terms(self) -> None:
        self.client.drop_collection(self.terms_name)
        from pymilvus import DataType

        self._small_collection(self.terms_name, [], ["df"], key=DataType.INT64)

    # -- chunks ----------------------------------------------------------------------------
    def insert_chunks(self, rows: list[dict]) -> None:
        for part in _slices(rows, 2048):
            self.client.insert(self.chunks_name, part)

    def settle(self) -> None:
        """After a commit group, on an embedded store: write the rows Milvus Lite holds in its
        in-memory table to a segment of their own and give the freed memory back, so a run's
        memory follows the commit group. Left alone, Milvus Lite keeps every row in memory until
        128 MiB of Arrow buffers (a whole big file's chunks), then flushes and builds the HNSW
        index of all of them at once at close: a 20 MB file peaked at 1.6 GiB that way. A server
        seals and flushes segments on its own schedule (and rate-limits explicit flushes).
        The flush's background compaction and index build are waited for, so that their memory
        does not come on top of the next part's forward passes (lite_background.py)."""
        if self.loc.local is None:
            return
        from llmtune.index.lite_background import wait_for_background

        names = [self.chunks_name, self.terms_name]
        for name in names:
            self.client.flush(name)
        wait_for_background(str(self.loc.local), names)
        _trim_heap()

    def delete_versions(self, versions: list[str]) -> None:
        for part in _slices(sorted(set(versions)), 1000):
            self.client.delete(self.chunks_name, filter=in_list("version", part))

    def count_chunks(self) -> int:
        rows = self.client.query(self.chunks_name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def chunks_where(self, expr: str, fields: list[str] | None = None) -> list[dict]:
        return list(self.chunks_iter(expr, fields))

    def chunks_iter(self, expr: str, fields: list[str] | None = None):
        it = self.client.query_iterator(self.chunks_name, batch_size=4096, filter=expr,
                                        output_fields=fields or CHUNK_OUTPUT)
        try:
            while batch := it.next():
                yield from batch
        finally:
            it.close()

    # -- search ----------------------------------------------------------------------------
    def search_dense(self, vectors, limit: int, expr: str, params: dict) -> list[list[dict]]:
        return self.client.search(self.chunks_name, data=list(vectors), anns_field="vector", limit=limit,
                                  filter=expr, output_fields=CHUNK_OUTPUT,
                                  search_params={"metric_type": "IP", "params": params})

    def search_sparse(self, vectors: list[dict], limit: int, expr: str) -> list[list[dict]]:
        """BM25: each query's idf-weighted term vector against the chunks' term weights (bm25.py)."""
        return self.client.search(self.chunks_name, data=list(vectors), anns_field="sparse", limit=limit,
                                  filter=expr, output_fields=CHUNK_OUTPUT, search_params={"metric_type": "IP"})

    def search_path(self) -> str:
        """Which code answers this store's dense searches (see milvus_lite_patch)."""
        if self.loc.local is None:
            return "the server's own engine"
        from llmtune.index.milvus_lite_patch import search_path

        return search_path()

    def close(self) -> None:
        self.client.close()
        if self.loc.local is not None:
            # Milvus Lite serves a .db from a thread of this process and holds its lock until
            # released: another process (or a later run in this one) may open it next.
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(self.loc.local))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc only). Flushes free their buffers
    in the middle of the heap, which glibc keeps otherwise, so the process's resident memory
    would keep the high-water mark of every group."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to trim
        pass


def _slices(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


GRPC_OPTIONS = {"grpc.keepalive_time_ms": 7_200_000}
"""pymilvus pings its server every 10 s, also between calls; a gRPC server that does not permit
pings without calls (Milvus Lite's, embedded or served) answers repeated ones with GOAWAY
"too_many_pings", which gRPC prints on stderr. A command's connection is short-lived and a
failed call raises anyway, so llmtune pings only after two idle hours, as gRPC's servers permit."""


def _connect(loc: Location):
    try:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException
    except ImportError:
        raise UserError("stores need pymilvus and milvus-lite: pip install 'llmtune[index]'") from None

    for name in ("pymilvus", "milvus_lite", "grpc._server"):
        # pymilvus warns on every query iterator (whose timestamp call Milvus Lite's in-process
        # server answers "not implemented", logged as a traceback), and milvus_lite logs its
        # own; failures reach the user through the exceptions below instead.
        logging.getLogger(name).setLevel(logging.CRITICAL)
    if loc.local is not None:
        if _held_elsewhere(loc):
            raise UserError(_open_elsewhere(loc))
        # Embedded: the engine runs in this process, so its dense search can take llmtune's
        # vectorised visibility masks (same results; see milvus_lite_patch).
        from llmtune.index.milvus_lite_patch import install

        install()
    try:
        return MilvusClient(uri=loc.uri, token=loc.token or "", timeout=15, grpc_options=GRPC_OPTIONS)
    except MilvusException as exc:
        if loc.local is not None:
            if _held_elsewhere(loc):  # another process opened it between the check and the open
                raise UserError(_open_elsewhere(loc)) from None
            raise UserError(f"{loc.describe()}: Milvus Lite could not open it ({exc.message})") from None
        raise UserError(f"{loc.describe()}: cannot reach a Milvus server there ({exc.message}); check that it is "
                        f"running and the URI (and --token) are right") from None


def _open_elsewhere(loc: Location) -> str:
    return (f"{loc.describe()} is open in another process (an `llmtune index` run?); Milvus Lite lets one "
            f"process use a store at a time. Wait for it, or serve the store with `python -m llmtune.index.serve "
            f"--data-dir {loc.local} --host 127.0.0.1 --port 19530` (`milvus-lite server` with llmtune's fast "
            f"search) and use --store http://127.0.0.1:19530")


def _held_elsewhere(loc: Location) -> bool:
    """Whether another process holds the store's lock (Milvus Lite lets one process open a store)."""
    import fcntl

    from milvus_lite.server_manager import server_manager_instance

    lock = loc.local / "LOCK"
    if not lock.exists() or str(loc.local) in getattr(server_manager_instance, "_servers", {}):
        return False  # new, or open in this process already (pymilvus reuses it)
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False
