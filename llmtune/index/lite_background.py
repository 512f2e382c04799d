"""Waiting out an embedded store's background work (milvus-lite 3.2.2, version-gated).

After every flush Milvus Lite hands compaction (merging a size tier's segment files into one)
and the HNSW build of the new segments to a background thread of its own. While an
`llmtune index` run embeds the next part, that thread's transient memory (the merged segment's
copies and its index build, +150-200 MiB on a 20 MB file) came on top of the forward passes'
own: the two peaks added up. Waiting for it after each flush makes them take turns; the work is
the same, and on two cores it competed with the forward passes for the CPU anyway.

The library has no public call for this, so it is reached through the in-process server's
database object, on the one version it was read on (`milvus_lite_patch.TESTED_VERSION`);
any other version, or a store served elsewhere, is left to run in the background as before.
"""

from __future__ import annotations

import os

from llmtune.index.milvus_lite_patch import installed_is_supported


def wait_for_background(db_path: str, collections: list[str]) -> bool:
    """Block until the collections' queued compaction and index builds are done. False when
    it cannot tell (another milvus-lite version, or no embedded server for `db_path`)."""
    if not installed_is_supported():
        return False
    from milvus_lite.server_manager import server_manager_instance

    entry = getattr(server_manager_instance, "_servers", {}).get(os.path.abspath(db_path))
    if entry is None:
        return False
    db = entry[1]
    for name in collections:
        if db.has_collection(name):
            db.get_collection(name)._wait_for_bg()
    return True
