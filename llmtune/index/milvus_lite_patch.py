"""A patch of milvus-lite 3.2.2: dense search and the query/count masks of an embedded store
without a Python loop over every row.

This module replaces two functions inside a third-party library, process-wide. It is fenced:
- an exact version gate: only milvus-lite TESTED_VERSION gets the patch; any other version
  keeps the library's own functions, and the process says so once on stderr;
- `LLMTUNE_MILVUS_FASTPATH=0` keeps the library's functions too;
- `search_path()` says which path answers (`llmtune doctor`, `llmtune query --json`);
- tests/test_milvus_lite_patch.py runs the library's functions and these on the same stores
  and compares every result, on the gate's version.

Milvus Lite 3.2's dense search (`milvus_lite.search.executor_indexed.execute_search_with_index`)
decides which rows a query may see by walking every row of every segment on every search:
a dictionary look-up per row for the newest version of its primary key across sources
(upserts leave old copies in older segments), and two deletion checks per row. At 100,000
chunks that is ~150 ms a query, against ~1 ms for the HNSW search itself.

This module is llmtune's own implementation of the same function contract, written from
the engine's semantics, not its code. A segment's row (primary key p, sequence number q)
is visible iff
  - q is the largest sequence number of p among the in-scope sources (segments of the
    searched partitions, then the memtable); equal maxima are all visible, as in Milvus Lite;
  - no tombstone for p in the collection's DeltaIndex has a sequence number > q;
  - no delete of p still in the memtable has a sequence number > q;
  - the compiled filter and the vector's null mask allow it.
Segments are immutable and their primary keys are unique within a segment (flush writes
one row per key, compaction dedups), so only keys that occur in more than one source, or
that have a tombstone, can be hidden by the first three rules. Those are found with set
intersections of the segments' own `pk_to_row` maps (C loops), and the per-row work is
proportional to them, not to the store. What depends only on the set of segments (which
rows an upsert in a newer segment shadows) is computed once per set and cached. Everything
after the masks (ANN search per source, the global merge and its tie order, projection)
follows the original's order exactly, so the results are identical; the equivalence is
tested in tests/test_index_fastpath.py against the original on randomized stores.

The query and count paths have the same per-row loop in `milvus_lite.search.bitmap.build_valid_mask`
(over one flat candidate list); `fast_build_valid_mask` replaces it on the same principle. Every
`llmtune query` makes one such query, the hidden-version check over the file-state collection.

It is installed (`install()`) when llmtune opens an embedded store, by replacing the names
`execute_search_with_index` in `milvus_lite.engine.collection` and `build_valid_mask` in
`milvus_lite.search.bitmap`. Any input the patch cannot prove it handles (a segment with a
repeated key, unexpected object types) goes to the original function. A store served by
`milvus-lite server` runs in that process, which this never patches
(`python -m llmtune.index.serve` is that server with the patch installed first).

BM25 (llmtune's own sparse vectors since store format 2) goes through the library's sparse
search unpatched.
"""

from __future__ import annotations

import os
import threading
import weakref

ENV_SWITCH = "LLMTUNE_MILVUS_FASTPATH"
TESTED_VERSION = "3.2.2"
"""The one milvus-lite version the patch was tested on; any other gets the library's own path."""
_CACHE_SIZE = 8

_lock = threading.Lock()
_cache_lock = threading.RLock()  # re-entrant: a weakref callback may run during a GC inside the lock
_originals: dict = {}
"""The library's functions by name, while installed."""
_set_cache: dict = {}
"""Segment-set key -> (weak references to the segments' seq arrays, per-segment shadowed rows)."""


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip() != "0"


def supported(version: str) -> bool:
    return version == TESTED_VERSION


def installed_is_supported() -> bool:
    """Whether the installed milvus-lite is the version this module's internals were read on."""
    found = _library_version()
    return found is not None and supported(found)


_noticed: set = set()


def _library_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("milvus-lite")
    except PackageNotFoundError:
        return None


def search_path() -> str:
    """Which code answers an embedded store's dense searches in this process, and why."""
    if not enabled():
        return f"milvus-lite's own ({ENV_SWITCH}=0)"
    found = _library_version()
    if found is None:
        return "none (milvus-lite is not installed)"
    if not supported(found):
        return f"milvus-lite's own (version {found}; llmtune's patch is tested on {TESTED_VERSION} only)"
    return f"llmtune's patch of milvus-lite {found}" if _originals else f"llmtune's patch of milvus-lite {found} " \
        f"(installed when an embedded store opens)"


def _notice_untested(found: str) -> None:
    if found not in _noticed:
        _noticed.add(found)
        import sys

        print(f"llmtune: milvus-lite {found} is not the version its search patch was tested on ({TESTED_VERSION}); "
              f"using milvus-lite's own search (correct, slower on large stores)", file=sys.stderr, flush=True)


def _targets():
    """(module, name, llmtune's replacement) for each function the fast path stands in for."""
    from milvus_lite.engine import collection
    from milvus_lite.search import bitmap

    # collection.py imports execute_search_with_index by name at import time, and
    # build_valid_mask from its module at each call (query, count): each is replaced where it is read.
    return [(collection, "execute_search_with_index", fast_execute_search_with_index),
            (bitmap, "build_valid_mask", fast_build_valid_mask)]


def install() -> bool:
    """Put the fast path in place for this process (idempotent). True if it is active."""
    if not enabled():
        return False
    found = _library_version()
    if found is None:
        return False
    if not supported(found):
        _notice_untested(found)
        return False
    from milvus_lite.search import bitmap, executor_indexed

    library = {"execute_search_with_index": executor_indexed.execute_search_with_index,
               "build_valid_mask": bitmap.build_valid_mask}
    with _lock:
        targets = _targets()
        if all(getattr(module, name) is ours for module, name, ours in targets):
            return True
        if _originals or any(getattr(module, name) is not library[name] for module, name, _ in targets):
            return False  # someone else replaced one: do not stack on top of an unknown function
        for module, name, ours in targets:
            _originals[name] = getattr(module, name)
            setattr(module, name, ours)
    return True


def uninstall() -> None:
    """Put the library's functions back (tests)."""
    with _lock:
        for module, name, ours in _targets():
            if name in _originals and getattr(module, name) is ours:
                setattr(module, name, _originals[name])
        _originals.clear()


def original_function(name: str = "execute_search_with_index"):
    from milvus_lite.search import bitmap, executor_indexed

    if name in _originals:
        return _originals[name]
    return executor_indexed.execute_search_with_index if name == "execute_search_with_index" else bitmap.build_valid_mask


def fast_execute_search_with_index(query_vectors, segments, memtable, delta_index, top_k, metric_type, pk_field,
                                   vector_field, partition_names=None, compiled_filter=None, output_fields=None,
                                   indexed_filter_plan=None, project_record_fn=None, search_params=None):
    """Same arguments and result as milvus_lite's execute_search_with_index."""
    segments = tuple(segments)  # may be a one-shot iterable; the fallback needs it again
    args = dict(query_vectors=query_vectors, segments=segments, memtable=memtable, delta_index=delta_index,
                top_k=top_k, metric_type=metric_type, pk_field=pk_field, vector_field=vector_field,
                partition_names=partition_names, compiled_filter=compiled_filter, output_fields=output_fields,
                indexed_filter_plan=indexed_filter_plan, project_record_fn=project_record_fn,
                search_params=search_params)
    if enabled():
        result = _search(**args)
        if result is not None:
            return result
    return original_function()(**args)


def _search(query_vectors, segments, memtable, delta_index, top_k, metric_type, pk_field, vector_field,
            partition_names, compiled_filter, output_fields, indexed_filter_plan, project_record_fn,
            search_params):
    """The search, or None where the fast path does not apply (the caller falls back)."""
    tombstones = getattr(delta_index, "_map", None)
    if not isinstance(tombstones, dict):
        return None
    query_vectors = _as_query_matrix(query_vectors)
    nq = int(query_vectors.shape[0])
    if nq == 0 or top_k <= 0:
        return [[] for _ in range(nq)]
    in_scope = _segments_in_scope(segments, partition_names)
    if in_scope is None:
        return None
    mt = memtable.to_search_snapshot(vector_field=vector_field, partition_names=partition_names,
                                     include_table=compiled_filter is not None)
    mt_pks = mt[0]
    if not in_scope and not mt_pks:
        return [[] for _ in range(nq)]
    mt_row = {pk: i for i, pk in enumerate(mt_pks)}
    if len(mt_row) != len(mt_pks):
        return None
    seg_masks, mt_mask = _visibility(in_scope, mt_row, mt[1], tombstones, memtable.delete_index_snapshot())
    candidates = _candidates(in_scope, mt, seg_masks, mt_mask, compiled_filter, indexed_filter_plan, vector_field,
                             query_vectors, top_k, metric_type, search_params)
    project = _projection(project_record_fn, output_fields, pk_field, vector_field)
    return [_materialize(found, top_k, in_scope, memtable, mt, pk_field, project) for found in candidates]


def _as_query_matrix(query_vectors):
    import numpy as np

    if query_vectors.ndim == 1:
        query_vectors = query_vectors.reshape(1, -1)
    return query_vectors.astype(np.float32, copy=False) if query_vectors.dtype != np.float32 else query_vectors


def _segments_in_scope(segments, partition_names):
    """The searched segments with rows, or None if one breaks the unique-key rule."""
    wanted = set(partition_names) if partition_names else None
    in_scope = [s for s in segments if s.num_rows > 0 and (wanted is None or s.partition in wanted)]
    for seg in in_scope:
        # Unique keys within the segment are what lets one dict look-up stand for "the row of p".
        if not (isinstance(seg.pk_to_row, dict) and len(seg.pk_to_row) == len(seg.pks) == len(seg.seqs)):
            return None
    return in_scope


def _candidates(in_scope, mt, seg_masks, mt_mask, compiled_filter, indexed_filter_plan, vector_field,
                query_vectors, top_k, metric_type, search_params) -> list[list[tuple]]:
    """Per query, (distance, source, row) of each source's top-k under its masks."""
    mt_pks, _, mt_vecs, _, mt_table = mt
    if compiled_filter is not None:
        from milvus_lite.search.filter import evaluate_mask
        from milvus_lite.search.indexed_filter import evaluate_segment_filter

        seg_filters = [evaluate_segment_filter(seg, compiled_filter, indexed_filter_plan) for seg in in_scope]
        mt_filter = evaluate_mask(compiled_filter, mt_table) if mt_pks and mt_table is not None else None
    else:
        seg_filters, mt_filter = [None] * len(in_scope), None
    candidates: list[list[tuple]] = [[] for _ in range(int(query_vectors.shape[0]))]
    for source, seg in enumerate(in_scope):
        vectors, null_mask = seg.vector_data(vector_field)
        allowed = seg_filters[source]
        if null_mask is not None:
            allowed = null_mask if allowed is None else allowed & null_mask
        _recall(candidates, source, seg_masks[source], allowed, vectors, seg.indexes.get(vector_field),
                query_vectors, top_k, metric_type, search_params)
    if mt_pks:
        _recall(candidates, len(in_scope), mt_mask, mt_filter, mt_vecs, None, query_vectors, top_k,
                metric_type, search_params)
    return candidates


def _materialize(found: list[tuple], top_k: int, in_scope, memtable, mt, pk_field, project) -> list[dict]:
    """One query's hits, best first in the original's tie order (distance, source, row)."""
    mt_pks, mt_row_refs = mt[0], mt[3]
    found.sort()
    hits = []
    for dist, source, row in found[:top_k]:
        if source < len(in_scope):
            record = in_scope[source].row_to_dict(row)
            pk_list = in_scope[source].pks
        else:
            record = memtable.materialize_row(*mt_row_refs[row])
            pk_list = mt_pks
        pk = record.get(pk_field) if pk_field in record else pk_list[row]
        hits.append({"id": pk, "distance": dist, "entity": project(record)})
    return hits


def _visibility(in_scope, mt_row, mt_seqs, tombstones, mt_deletes):
    """Per segment and for the memtable, a bool mask of the rows no newer version or delete hides."""
    import numpy as np

    seg_masks = []
    for seg, shadowed in zip(in_scope, _shadowed_between_segments(in_scope)):
        mask = np.ones(len(seg.pks), dtype=bool)
        mask[shadowed] = False
        seg_masks.append(mask)
    mt_mask = np.ones(len(mt_row), dtype=bool)

    if mt_row:
        # Keys both in the memtable and in segments: only the largest seq among all copies stays.
        copies: dict = {}
        for i, seg in enumerate(in_scope):
            for pk in seg.pk_to_row.keys() & mt_row.keys():
                row = seg.pk_to_row[pk]
                copies.setdefault(pk, []).append((i, row, int(seg.seqs[row])))
        for pk, found in copies.items():
            mt_i = mt_row[pk]
            best = max(int(mt_seqs[mt_i]), max(seq for _, _, seq in found))
            for i, row, seq in found:
                if seq != best:
                    seg_masks[i][row] = False
            if int(mt_seqs[mt_i]) != best:
                mt_mask[mt_i] = False

    # A delete hides a copy whose seq is strictly smaller than the delete's.
    for deletes, seq_of in ((tombstones, None), (mt_deletes, 0)):
        if not deletes:
            continue
        for i, seg in enumerate(in_scope):
            for pk in deletes.keys() & seg.pk_to_row.keys():
                row = seg.pk_to_row[pk]
                d = deletes[pk] if seq_of is None else deletes[pk][seq_of]
                if d > int(seg.seqs[row]):
                    seg_masks[i][row] = False
        for pk in deletes.keys() & mt_row.keys():
            i = mt_row[pk]
            d = deletes[pk] if seq_of is None else deletes[pk][seq_of]
            if d > int(mt_seqs[i]):
                mt_mask[i] = False
    return seg_masks, mt_mask


def _shadowed_between_segments(in_scope):
    """For each segment, the rows whose key has a newer copy in another of these segments.

    Depends only on the (immutable) segments, so it is cached per segment set. The key holds
    the ids of the segments' seq arrays, and the entry weak references to them: an entry is
    used only while those very arrays are alive, so a dropped segment cannot be confused
    with a new one that reuses its address, and the entry goes when any of them does.
    """
    import numpy as np

    if len(in_scope) < 2:
        return [np.zeros(0, dtype=np.intp)] * len(in_scope)
    key = tuple(id(seg.seqs) for seg in in_scope)
    with _cache_lock:
        entry = _set_cache.get(key)
    if entry is not None and all(ref() is seg.seqs for ref, seg in zip(entry[0], in_scope)):
        return entry[1]

    union = set(in_scope[0].pk_to_row)
    repeated: set = set()
    for seg in in_scope[1:]:
        keys = seg.pk_to_row.keys()
        repeated |= keys & union
        union |= keys
    del union
    rows: list[list[int]] = [[] for _ in in_scope]
    for pk in repeated:
        where = [(i, seg.pk_to_row[pk]) for i, seg in enumerate(in_scope) if pk in seg.pk_to_row]
        seqs = [int(in_scope[i].seqs[row]) for i, row in where]
        best = max(seqs)
        for (i, row), seq in zip(where, seqs):
            if seq != best:
                rows[i].append(row)
    shadowed = [np.asarray(sorted(r), dtype=np.intp) for r in rows]

    def forget(_ref, key=key):
        with _cache_lock:
            _set_cache.pop(key, None)

    refs = tuple(weakref.ref(seg.seqs, forget) for seg in in_scope)
    with _cache_lock:
        while len(_set_cache) >= _CACHE_SIZE:
            _set_cache.pop(next(iter(_set_cache)))
        _set_cache[key] = (refs, shadowed)
    return shadowed


def _recall(candidates, source, visible, allowed, vectors, index, query_vectors, top_k, metric_type,
            search_params):
    """One source's top-k under its mask, appended as (distance, source, row) per query."""
    if len(visible) == 0:
        return
    mask = visible if allowed is None else visible & allowed.astype(bool)
    if not mask.any():
        return
    if index is None:
        from milvus_lite.index.brute_force import BruteForceIndex

        index = BruteForceIndex.build(vectors, metric_type)
    # None: every row valid, which lets the ANN index skip its ID selector (the original does the same).
    ids, dists = index.search(query_vectors, top_k, valid_mask=None if mask.all() else mask, params=search_params)
    for q, found in enumerate(candidates):
        for j in range(top_k):
            row = int(ids[q, j])
            if row < 0:
                break  # padding from here on
            found.append((float(dists[q, j]), source, row))


def _projection(project_record_fn, output_fields, pk_field, vector_field):
    if project_record_fn is not None:
        return project_record_fn
    if output_fields is None:
        return lambda record: {k: v for k, v in record.items() if k != pk_field and k != vector_field}
    keep = set(output_fields)
    keep.discard(pk_field)
    return lambda record: {k: record[k] for k in keep if k in record}


def fast_build_valid_mask(all_pks, all_seqs, delta_index, filter_mask=None, memtable=None):
    """Same arguments and result as milvus_lite.search.bitmap.build_valid_mask.

    The query and count paths put every candidate row (segments, then the memtable) in one
    list; a row is valid iff its seq is its key's largest in the list, no tombstone (the
    DeltaIndex's or the memtable's) is newer, and the filter mask allows it. Only keys that
    occur more than once or have a tombstone need a look at their rows."""
    import numpy as np

    n = len(all_pks)
    tombstones = getattr(delta_index, "_map", None)
    if (not enabled() or n == 0 or not isinstance(tombstones, dict) or all_seqs.shape[0] != n
            or (filter_mask is not None and filter_mask.shape[0] != n)):
        return original_function("build_valid_mask")(all_pks, all_seqs, delta_index, filter_mask=filter_mask,
                                                     memtable=memtable)
    last = dict(zip(all_pks, range(n)))  # key -> its last row
    mask = np.ones(n, dtype=bool)
    rows_of: dict = {}  # repeated key -> all its rows
    if len(last) != n:
        is_last = np.zeros(n, dtype=bool)
        is_last[np.fromiter(last.values(), dtype=np.intp, count=len(last))] = True
        for i in np.flatnonzero(~is_last).tolist():
            rows_of.setdefault(all_pks[i], []).append(i)
        for pk, rows in rows_of.items():
            rows.append(last[pk])
            seqs = [int(all_seqs[i]) for i in rows]
            best = max(seqs)
            for i, seq in zip(rows, seqs):
                if seq != best:
                    mask[i] = False
    mt_deletes = memtable.delete_index_snapshot() if memtable is not None else {}
    for deletes, in_memtable in ((tombstones, False), (mt_deletes, True)):
        for pk in deletes.keys() & last.keys() if deletes else ():
            d = deletes[pk][0] if in_memtable else deletes[pk]
            for i in rows_of.get(pk) or (last[pk],):
                if d > int(all_seqs[i]):
                    mask[i] = False
    if filter_mask is not None:
        mask = mask & filter_mask.astype(bool)
    return mask
