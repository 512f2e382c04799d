"""Index and query against both kinds of store: Milvus Lite on a local .db and a
`milvus-lite server` on a local port (the same client and calls a Milvus cluster takes).
Incremental add/update/delete, source filters, a planted passage first in every mode, and
the refusal of another model."""

from __future__ import annotations

import pytest
from index_helpers import cached_models, milvus_server, store_at, visible_versions  # noqa: F401

from llmtune.errors import UserError
from llmtune.index.retrieve import Retriever, open_store
from llmtune.index.sync import index_paths

pytestmark = pytest.mark.usefixtures("one_thread", "cached_models")

TOPICS = {
    "wings.txt": "Swept wings delay the drag rise at transonic speeds. Aircraft designers trade span for sweep.",
    "soup.md": "# Soup\n\nA good minestrone needs beans, pasta and a slow simmer of tomatoes and celery.",
    "tides.txt": "Ocean tides follow the moon. Spring tides come when the sun and moon line up.",
    "chess.html": "<html><body><p>In chess, the <b>Sicilian Defence</b> answers 1.e4 with c5.</p></body></html>",
    "bees.txt": "Honey bees dance to tell their hive where flowers are, and how far away.",
    "rust.md": "Rust forms when iron meets oxygen and water; salt speeds the corrosion up.",
}
PLANTED = "The Zorblax reactor on Kepler station vents its plasma every 37 minutes to stay cool."


def _write(folder, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def _search(store, collection, text, mode="hybrid", k=3, globs=None):
    st, settings = open_store(store, None, collection)
    with st:
        return Retriever(st, settings).search([text], k, mode, globs)[0]


def test_incremental_add_update_delete(tmp_path, store_at):
    store, collection = store_at
    docs = tmp_path / "docs"
    _write(docs, {k: TOPICS[k] for k in ("wings.txt", "soup.md", "tides.txt")})
    first = index_paths([docs], store, collection=collection)
    assert (first["added"], first["updated"], first["removed"], first["unchanged"]) == (3, 0, 0, 0)
    assert first["chunks_in_store"] == first["chunks_written"] == 3
    versions = visible_versions(store, collection)

    again = index_paths([docs], store, collection=collection)
    assert (again["added"], again["unchanged"], again["chunks_written"]) == (0, 3, 0)  # nothing re-embedded
    assert visible_versions(store, collection) == versions

    (docs / "soup.md").write_text("# Soup\n\nGazpacho is served cold, blended from raw tomatoes and peppers.")
    (docs / "tides.txt").unlink()
    _write(docs, {"bees.txt": TOPICS["bees.txt"]})
    third = index_paths([docs], store, collection=collection)
    assert (third["added"], third["updated"], third["removed"], third["unchanged"]) == (1, 1, 1, 1)
    assert third["chunks_in_store"] == 3 and third["chunks_written"] == 2
    now = visible_versions(store, collection)
    assert sorted(now) == sorted(str(docs.resolve() / n) for n in ("wings.txt", "soup.md", "bees.txt"))
    assert now[str(docs.resolve() / "wings.txt")] == versions[str(docs.resolve() / "wings.txt")]
    soup = _search(store, collection, "gazpacho", mode="bm25")
    assert soup and soup[0].text.endswith("raw tomatoes and peppers.")
    assert not _search(store, collection, "minestrone", mode="bm25"), "the old version's chunks are gone"
    assert not _search(store, collection, "moon", mode="bm25"), "the deleted file's chunks are gone"

    # Indexing one file of the folder leaves the folder's other files alone.
    one = index_paths([docs / "bees.txt"], store, collection=collection)
    assert (one["removed"], one["unchanged"], one["chunks_in_store"]) == (0, 1, 3)


def test_planted_passage_ranks_first_in_all_three_modes(tmp_path, store_at):
    store, collection = store_at
    docs = tmp_path / "docs"
    _write(docs, {**TOPICS, "station.txt": PLANTED})
    index_paths([docs], store, collection=collection)
    for mode in ("dense", "bm25", "hybrid"):
        hits = _search(store, collection, "How often does the Zorblax reactor vent plasma?", mode=mode, k=3)
        assert hits[0].source.endswith("station.txt"), (mode, [h.source for h in hits])
        assert hits[0].text == PLANTED and (hits[0].start, hits[0].end) == (0, len(PLANTED))
        # BM25 finds only chunks sharing a term with the query (stop words dropped): here the planted one.
        assert [h.rank for h in hits] == ([1] if mode == "bm25" else [1, 2, 3])
        assert all(a.score >= b.score > 0 for a, b in zip(hits, hits[1:])) and hits[0].score > 0


def test_source_filters(tmp_path, store_at, monkeypatch):
    store, collection = store_at
    docs = tmp_path / "docs"
    _write(docs, TOPICS)
    _write(docs / "sub", {"more.md": "Rust on bridges is painted over every few years."})
    index_paths([docs], store, collection=collection)
    md = _search(store, collection, "rust corrosion", mode="bm25", k=10, globs=["*.md"])
    assert md and all(h.source.endswith(".md") for h in md)
    assert {h.source.rsplit("/", 1)[1] for h in md} == {"rust.md", "more.md"}
    monkeypatch.chdir(tmp_path)
    sub = _search(store, collection, "rust", mode="dense", k=10, globs=["docs/sub/*"])
    assert [h.source for h in sub] == [str(docs.resolve() / "sub" / "more.md")]
    either = _search(store, collection, "rust", mode="hybrid", k=10, globs=["docs/sub/*", "*/bees.txt"])
    assert {h.source.rsplit("/", 1)[1] for h in either} == {"more.md", "bees.txt"}
    assert _search(store, collection, "rust", globs=["*.pdf"]) == []


def test_another_model_or_chunking_is_refused_with_what_the_store_holds(tmp_path, store_at):
    store, collection = store_at
    docs = tmp_path / "docs"
    _write(docs, {"bees.txt": TOPICS["bees.txt"]})
    index_paths([docs], store, collection=collection, chunk_tokens=64, overlap=8)
    with pytest.raises(UserError, match=r"built with model minilm \(mean pooling, normalised, 384 dims\), chunks "
                                        r"of 64 tokens with 8 overlap.*--model tiny-bert \(the store has minilm\)"):
        index_paths([docs], store, collection=collection, model="tiny-bert")
    with pytest.raises(UserError, match=r"--chunk-tokens 128 \(the store has 64\)"):
        index_paths([docs], store, collection=collection, chunk_tokens=128)
    st, settings = open_store(store, None, collection)
    with st, pytest.raises(UserError, match="--model tiny-bert"):
        Retriever(st, settings, model="tiny-bert")
    # Naming the store's own settings is fine, and so is naming none.
    assert index_paths([docs], store, collection=collection, model="minilm", chunk_tokens=64)["unchanged"] == 1
