"""The Milvus Lite dense-search fast path (llmtune/index/milvus_lite_patch.py) returns exactly
what the library's own function returns.

A differential hook replaces the engine's search function for the test: every dense search
made through a real embedded MilvusClient runs both the library's function and the fast path
on the same arguments (same segment snapshot, memtable, tombstones) and records any
difference in the full result lists (ids, distances, order, entities). A randomized driver
makes the states worth comparing: inserts, upserts of existing ids (also into another
partition), deletes by id and by filter, flushes (each a new segment; enough of them to
trigger compaction), reopening the store (tombstones rebuilt from disk), vectors drawn from a
small pool so that distances tie, with and without filters, partitions and output fields."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from llmtune.index.milvus_lite_patch import ENV_SWITCH

DIM = 8
COLLECTION = "c"


@pytest.fixture
def differential(monkeypatch):
    """Route every dense search through both functions; what differs is recorded.

    The library's own ANN calls are not reproducible to the last bit: its brute-force search
    multiplies a fresh copy of the masked rows, and BLAS can round a distance one ulp apart
    from one call to the next (seen here: -1.3595885 vs -1.3595884 for the same row). So
    within one comparison an index search with exactly the same inputs (the index, the
    vectors, the queries, k, the row mask, the parameters) returns what it returned to the
    library's function; any other input, such as a different mask, is searched afresh."""
    import hashlib

    from milvus_lite.engine import collection
    from milvus_lite.index.brute_force import BruteForceIndex
    from milvus_lite.index.faiss_hnsw import FaissHnswIndex

    from llmtune.index import milvus_lite_patch as fp

    assert fp.install()  # as opening an embedded store does (the query path's mask comes from it)
    original = fp.original_function()
    seen = {"searches": 0, "fast": 0, "mismatches": []}
    memo: dict = {}

    def digest(a) -> str:
        return "-" if a is None else hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()

    def remembered(cls, real):
        def search(self, queries, top_k, valid_mask=None, params=None):
            which = digest(self._vectors) if cls is BruteForceIndex else id(self)
            key = (cls.__name__, which, digest(queries), top_k, digest(valid_mask), repr(params))
            if key not in memo:
                memo[key] = real(self, queries, top_k, valid_mask=valid_mask, params=params)
            return memo[key]
        return search

    for cls in (BruteForceIndex, FaissHnswIndex):
        monkeypatch.setattr(cls, "search", remembered(cls, cls.search))

    def indexes(segments):
        return [(id(seg), sorted((k, id(v)) for k, v in seg.indexes.items()), sorted(seg.scalar_indexes))
                for seg in segments]

    def both(**kw):
        # Milvus Lite attaches a new segment's indexes from a background thread; if that
        # happens between the two calls they searched different things, so compare again.
        for _ in range(20):
            memo.clear()
            before = indexes(kw["segments"])
            want = original(**kw)
            got = fp._search(**kw)
            if indexes(kw["segments"]) == before:
                break
        seen["searches"] += 1
        if got is not None:
            seen["fast"] += 1
            if got != want:
                seen["mismatches"].append((kw.get("partition_names"), kw.get("compiled_filter"), want, got))
        return want

    monkeypatch.setattr(collection, "execute_search_with_index", both)
    return seen


def _open(path, pk: str):
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=str(path))
    if client.has_collection(COLLECTION):
        client.load_collection(COLLECTION)
        return client
    s = MilvusClient.create_schema(auto_id=False)
    if pk == "str":
        s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=32)
    else:
        s.add_field("id", DataType.INT64, is_primary=True)
    s.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    s.add_field("version", DataType.VARCHAR, max_length=16)
    s.add_field("n", DataType.INT64)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="HNSW", metric_type="IP", params={"M": 8, "efConstruction": 64})
    client.create_collection(COLLECTION, schema=s, index_params=index, consistency_level="Strong")
    for p in ("p1", "p2"):
        client.create_partition(COLLECTION, p)
    return client


def _close(client, path):
    from milvus_lite.server_manager import server_manager_instance

    client.close()
    server_manager_instance.release_server(str(path))


def drive(path, seed: int, steps: int, pk: str = "str", query_mismatches: list | None = None) -> int:
    """Random writes, searches and queries against one store; returns the number of searches made.
    Queries whose results differ with the fast path off and on go to `query_mismatches`."""
    query_mismatches = [] if query_mismatches is None else query_mismatches
    rng = random.Random(seed)
    pool = np.random.default_rng(seed).normal(size=(12, DIM)).astype(np.float32)  # few vectors: tied distances
    client = _open(path, pk)
    ids: list = []
    searches = 0

    def key(i: int):
        return f"k{i}" if pk == "str" else i

    def rows(keys):
        return [{"id": k, "vector": pool[rng.randrange(len(pool))].tolist(), "version": rng.choice("abc"),
                 "n": rng.randrange(10)} for k in keys]

    try:
        for _ in range(steps):
            op = rng.random()
            part = rng.choice([None, "p1", "p2"])
            if op < 0.25 or not ids:
                new = [key(len(ids) + j) for j in range(rng.randrange(1, 30))]
                ids.extend(new)
                client.insert(COLLECTION, rows(new), partition_name=part or "_default")
            elif op < 0.40:
                client.upsert(COLLECTION, rows(rng.sample(ids, min(len(ids), rng.randrange(1, 15)))),
                              partition_name=part or "_default")
            elif op < 0.50:
                client.delete(COLLECTION, ids=rng.sample(ids, min(len(ids), rng.randrange(1, 8))))
            elif op < 0.53:
                client.delete(COLLECTION, filter=f'version == "{rng.choice("abc")}" and n < 3')
            elif op < 0.63:
                client.flush(COLLECTION)
            elif op < 0.66:
                _close(client, path)
                client = _open(path, pk)
            elif op < 0.72:
                # The query and count paths (build_valid_mask): the same call with the switch off, then on.
                flt = rng.choice(["", "n > 4", 'version not in ["c"]'])
                parts = rng.choice([None, ["p1"], ["_default", "p2"]])
                got = []
                for switch in ("0", "1"):
                    os.environ[ENV_SWITCH] = switch
                    got.append((sorted(map(repr, client.query(COLLECTION, filter=flt or "id != ''" if pk == "str"
                                                                else flt or "id >= 0", partition_names=parts,
                                                                output_fields=["id", "version", "n"]))),
                                client.query(COLLECTION, filter="", output_fields=["count(*)"])))
                os.environ.pop(ENV_SWITCH)
                if got[0] != got[1]:
                    query_mismatches.append((flt, parts, got))
            else:
                q = [pool[rng.randrange(len(pool))].tolist() if rng.random() < 0.5
                     else rng.gauss(0, 1) * pool[rng.randrange(len(pool))] + np.float32(0.1) for _ in range(2)]
                q = [list(map(float, v)) for v in q]
                client.search(COLLECTION, data=q, anns_field="vector", limit=rng.randrange(1, 25),
                              filter=rng.choice(["", "n > 4", 'version in ["a", "b"]', 'version not in ["c"]']),
                              partition_names=rng.choice([None, ["p1"], ["p1", "p2"], ["_default", "p2"]]),
                              output_fields=rng.choice([None, ["version"], ["version", "n", "vector"]]),
                              search_params={"metric_type": "IP", "params": {"ef": rng.choice([16, 64])}})
                searches += 1
    finally:
        _close(client, path)
    return searches


@pytest.mark.parametrize("seed,pk", [(1, "str"), (2, "str"), (3, "int")])
def test_fast_path_matches_library_on_random_stores(tmp_path, differential, seed, pk):
    query_mismatches: list = []
    searches = drive(tmp_path / "s.db", seed, 220, pk, query_mismatches)
    assert not query_mismatches, query_mismatches[0]
    assert differential["searches"] == searches > 40
    assert differential["fast"] == searches, "the fast path fell back on an ordinary store"
    assert not differential["mismatches"], differential["mismatches"][0]


def test_fast_path_matches_library_with_null_vectors(tmp_path, differential, monkeypatch):
    """Segments whose vector field has nulls carry a mask of the valid rows (Milvus Lite's own
    store writes them as zeros, so the mask is imposed here, the same for both functions)."""
    import zlib

    from milvus_lite.storage.segment import Segment

    real = Segment.vector_data

    def with_nulls(self, field_name):
        vectors, _ = real(self, field_name)
        return vectors, np.array([zlib.crc32(str(pk).encode()) % 4 != 0 for pk in self.pks])

    monkeypatch.setattr(Segment, "vector_data", with_nulls)
    searches = drive(tmp_path / "s.db", 4, 160)
    assert differential["fast"] == searches > 20
    assert not differential["mismatches"], differential["mismatches"][0]


@pytest.mark.parametrize("broken", ["tombstones", "memtable deletes", "upserts between segments", "query mask"])
def test_differential_catches_a_broken_mask(tmp_path, differential, monkeypatch, broken):
    """The comparison above can fail: a fast path that forgets one rule of visibility is caught."""
    from llmtune.index import milvus_lite_patch as fp

    real = fp._visibility
    if broken == "query mask":
        from milvus_lite.search import bitmap

        real_mask = fp.fast_build_valid_mask
        monkeypatch.setattr(bitmap, "build_valid_mask", lambda pks, seqs, delta, filter_mask=None, memtable=None:
                            real_mask(pks, seqs, type(delta)("id"), filter_mask, memtable) if fp.enabled()
                            else real_mask(pks, seqs, delta, filter_mask, memtable))
        query_mismatches: list = []
        drive(tmp_path / "s.db", 1, 220, query_mismatches=query_mismatches)
        assert query_mismatches
        return
    if broken == "upserts between segments":
        monkeypatch.setattr(fp, "_shadowed_between_segments", lambda segs: [np.zeros(0, dtype=np.intp)] * len(segs))
    else:
        def forgetful(segs, mt_row, mt_seqs, tombstones, mt_deletes):
            if broken == "tombstones":
                return real(segs, mt_row, mt_seqs, {}, mt_deletes)
            return real(segs, mt_row, mt_seqs, tombstones, {})
        monkeypatch.setattr(fp, "_visibility", forgetful)
    fp._set_cache.clear()
    drive(tmp_path / "s.db", 1, 220)
    fp._set_cache.clear()
    assert differential["mismatches"]


def test_store_open_installs_and_searches_go_through_it(tmp_path):
    from milvus_lite.engine import collection

    from llmtune.index import milvus_lite_patch as fp
    from llmtune.index.store import Store, parse_location

    with Store(parse_location(str(tmp_path / "s.db"))):
        assert collection.execute_search_with_index is fp.fast_execute_search_with_index
    assert fp.install()  # idempotent
    assert collection.execute_search_with_index is fp.fast_execute_search_with_index


def test_gate_leaves_the_library_alone_for_other_versions_and_the_switch(monkeypatch, capsys):
    import importlib.metadata

    from milvus_lite.engine import collection
    from milvus_lite.search import executor_indexed

    from llmtune.index import milvus_lite_patch as fp

    library = executor_indexed.execute_search_with_index
    try:
        fp.uninstall()
        assert collection.execute_search_with_index is library
        for untested in ("3.3.0", "3.2.3"):  # the gate is exact: a patch release may change the internals
            monkeypatch.setattr(importlib.metadata, "version", lambda name, v=untested: v)
            capsys.readouterr()
            assert not fp.install() and not fp.install()
            assert collection.execute_search_with_index is library
            notice = capsys.readouterr().err.splitlines()
            assert len(notice) == 1 and f"milvus-lite {untested} is not the version" in notice[0]
            assert fp.search_path().startswith(f"milvus-lite's own (version {untested};")
        monkeypatch.setattr(importlib.metadata, "version", lambda name: fp.TESTED_VERSION)
        monkeypatch.setenv(fp.ENV_SWITCH, "0")
        assert not fp.install()
        assert collection.execute_search_with_index is library
        assert fp.search_path() == f"milvus-lite's own ({fp.ENV_SWITCH}=0)"
        monkeypatch.delenv(fp.ENV_SWITCH)
        assert fp.install()
        assert fp.search_path() == f"llmtune's patch of milvus-lite {fp.TESTED_VERSION}"
        assert collection.execute_search_with_index is fp.fast_execute_search_with_index
        # Switched off after installation: every call goes to the library's function untouched.
        monkeypatch.setenv(fp.ENV_SWITCH, "0")
        calls = []
        monkeypatch.setattr(fp, "_search", lambda **kw: pytest.fail("fast path used while switched off"))
        monkeypatch.setitem(fp._originals, "execute_search_with_index", lambda **kw: calls.append(kw) or "library")
        assert fp.fast_execute_search_with_index(**{k: None for k in _ARGS}, segments=iter(())) == "library"
        assert calls and calls[0]["segments"] == ()
    finally:
        monkeypatch.undo()
        fp.uninstall()
        fp.install()


_ARGS = ("query_vectors", "memtable", "delta_index", "top_k", "metric_type", "pk_field", "vector_field")


def test_a_segment_with_a_repeated_key_falls_back():
    """Unique keys per segment are what the masks rely on; anything else goes to the library."""
    from llmtune.index import milvus_lite_patch as fp

    class Seg:
        num_rows, partition = 2, "_default"
        pks = ["a", "a"]
        seqs = np.array([1, 2], dtype=np.uint64)
        pk_to_row = {"a": 1}

    class Delta:
        _map: dict = {}

    assert fp._search(np.zeros((1, DIM), np.float32), (Seg(),), None, Delta(), 3, "IP", "id", "vector",
                      None, None, None, None, None, None) is None


def test_valid_mask_matches_library_on_random_candidates():
    """The query/count paths' mask (build_valid_mask) on random candidate lists: repeated keys
    with different or equal seqs, tombstones in the DeltaIndex and in the memtable, filters."""
    from milvus_lite.search import bitmap
    from milvus_lite.storage.delta_index import DeltaIndex

    from llmtune.index import milvus_lite_patch as fp

    library = fp.original_function("build_valid_mask")
    assert library.__module__ == bitmap.__name__
    rng = random.Random(7)
    hidden = {"dedup": 0, "tombstone": 0, "memtable delete": 0}
    for case in range(400):
        n = rng.randrange(0, 60)
        keys = [rng.randrange(25) for _ in range(n)]
        pks = keys if case % 2 else [f"k{k}" for k in keys]
        seqs = np.array([rng.randrange(1, 40) for _ in range(n)], dtype=np.uint64)
        delta = DeltaIndex("id")
        delta._map = {p: rng.randrange(1, 45) for p in rng.sample(pks, min(n, rng.randrange(0, 6)))}

        class Memtable:
            deletes = {p: (rng.randrange(1, 45), "_default") for p in rng.sample(pks, min(n, rng.randrange(0, 4)))}

            def delete_index_snapshot(self):
                return dict(self.deletes)

        filt = None if rng.random() < 0.5 else np.array([rng.random() < 0.7 for _ in range(n)])
        mt = Memtable() if rng.random() < 0.7 else None
        want = library(pks, seqs, delta, filter_mask=filt, memtable=mt)
        got = fp.fast_build_valid_mask(pks, seqs, delta, filter_mask=filt, memtable=mt)
        assert got.dtype == want.dtype and got.tolist() == want.tolist(), case
        # The cases must exercise each rule (checked with the library's own function).
        alone = library(pks, seqs, DeltaIndex("id"))
        hidden["dedup"] += not alone.all()
        hidden["tombstone"] += (alone & ~library(pks, seqs, delta)).any()
        if mt is not None:
            hidden["memtable delete"] += (alone & ~library(pks, seqs, DeltaIndex("id"), memtable=mt)).any()
    assert min(hidden.values()) > 20, hidden


def test_ci_runs_the_gated_version_and_says_which_path_answers(tmp_path, cli):
    """The test set-up pins milvus-lite to the gate's version, so the comparisons above run on it;
    `llmtune doctor` and `query --json` name the path that answers."""
    from importlib.metadata import version

    from llmtune.index import milvus_lite_patch as fp

    assert version("milvus-lite") == fp.TESTED_VERSION
    doctor = cli("doctor", "--json")
    assert doctor.code == 0 and "milvus-lite" in __import__("json").loads(doctor.out)["milvus_lite_search"]["path"]
