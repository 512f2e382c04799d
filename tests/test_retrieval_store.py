"""Retrieval through a store: hits grouped by document (`--per document`), batch queries
(`--input/--out`, resumable, file:line errors), `llmtune eval` with `eval.store`, and a
retrieval run as the store's encoder (`index --encoder RUN`; a classification run refused; a
retrained run refused at query time)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from llmtune.index.documents import fold, search_documents
from llmtune.index.retrieve import Hit

pytestmark = pytest.mark.usefixtures("one_thread")

ASSETS = Path(__file__).parent / "assets" / "retrieval"


def _hit(rank: int, source: str, locator: str = "", chunk: int = 0) -> Hit:
    return Hit(rank, 1.0 / rank, source, locator, chunk, 10 * chunk, 10 * chunk + 9, f"{source}:{locator}:{chunk}")


def test_fold_groups_chunks_by_document_rows_apart_and_pdf_pages_together():
    hits = [_hit(1, "/a.pdf", "page=2", 3), _hit(2, "/t.jsonl", "row=5"), _hit(3, "/a.pdf", "page=7", 9),
            _hit(4, "/t.jsonl", "row=6"), _hit(5, "/b.md", "", 0), _hit(6, "/t.jsonl", "row=5", 1),
            _hit(7, "/c.md")]
    docs = fold(hits, 3)
    assert [d.document for d in docs] == ["/a.pdf", "/t.jsonl#row=5", "/t.jsonl#row=6"]
    assert [d.rank for d in docs] == [1, 2, 3] and docs[0].score == 1.0 and docs[0].locator == "page=2"
    assert [c["chunk"] for c in docs[0].chunks] == [3, 9] and [c["rank"] for c in docs[1].chunks] == [2, 6]


class _Deep:
    """A retriever whose first 40 chunks all belong to one document."""

    def __init__(self):
        self.depths = []

    def search(self, queries, k, mode, globs=None, vectors=None):
        self.depths.append(k)
        ranked = [_hit(i + 1, "/big.md", "", i) for i in range(40)] + \
                 [_hit(41 + i, f"/d{i}.md") for i in range(20)]
        return [ranked[:k] for _ in queries]


def test_search_documents_looks_deeper_until_k_documents_are_found():
    retriever = _Deep()
    docs = search_documents(retriever, ["q"], 5, "bm25")[0]
    assert [d.document for d in docs] == ["/big.md", "/d0.md", "/d1.md", "/d2.md", "/d3.md"]
    assert retriever.depths == [25, 100] and len(docs[0].chunks) == 40
    # Fewer documents than asked in a list that was not full: that is all there is, no retry.
    few = _Deep()
    assert len(search_documents(few, ["q"], 30, "bm25")[0]) == 21 and few.depths == [150]


# -- through the CLI ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One store of the documents (tiny-bert, 32-token chunks), indexed once for the module."""
    from llmtune.index.sync import index_paths

    folder = tmp_path_factory.mktemp("built")
    shutil.copytree(ASSETS, folder / "data")
    index_paths([folder / "data" / "documents.jsonl"], str(folder / "kb.db"), model="tiny-bert", chunk_tokens=32,
                overlap=8, id_column="id")
    return folder


@pytest.fixture
def store(built, tmp_path):
    """(the store, a copy of the data folder this test may change; its documents are the store's)."""
    shutil.copytree(built / "data", tmp_path / "data")
    (tmp_path / "data" / "documents.jsonl").unlink()
    (tmp_path / "data" / "documents.jsonl").symlink_to(built / "data" / "documents.jsonl")
    return built / "kb.db", tmp_path / "data"


def test_batch_query_writes_one_row_per_query_and_resumes_after_a_kill(store, cli, tmp_path):
    path, data = store
    out = tmp_path / "hits.jsonl"
    args = ("query", "--store", path, "--input", data / "queries.jsonl", "--out", out, "-k", "3", "--mode", "dense")
    res = cli(*args, "--json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["searched"] == 8 and [r["line"] for r in rows] == list(range(1, 9))
    assert rows[0]["id"] == "q0" and rows[0]["per"] == "document" and len(rows[0]["hits"]) == 3
    assert "query: 8 of 8 searched (" in res.err  # no terminal: plain progress lines instead of a bar
    assert all(h["locator"].startswith("id=d") and h["chunks"] for h in rows[0]["hits"])
    # A kill after three rows, mid-way through the fourth: the torn line goes, the rest is redone.
    whole = out.read_text().splitlines(keepends=True)
    out.write_text("".join(whole[:3]) + whole[3][:20])
    res = cli(*args, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["kept"] == 3 and out.read_text() == "".join(whole)
    assert "query: 5 of 5 searched (" in res.err


@pytest.mark.parametrize("line, message", [
    ('{"id": "x", "text": "ok"', r"queries.jsonl:9: not a JSON object"),
    ('{"id": "x", "body": "no text"}', r"queries.jsonl:9: no query text; put it in a `text`"),
    ('{"id": "x", "text": " "}', r"queries.jsonl:9: the query is empty"),
])
def test_a_malformed_query_row_exits_2_naming_file_and_line(store, cli, tmp_path, line, message):
    import re

    path, data = store
    with open(data / "queries.jsonl", "a") as fh:
        fh.write(line + "\n")
    res = cli("query", "--store", path, "--input", data / "queries.jsonl", "--out", tmp_path / "h.jsonl")
    assert res.code == 2 and re.search(message, res.err), res.err
    assert not (tmp_path / "h.jsonl").exists()


def test_resuming_with_a_changed_input_is_refused(store, cli, tmp_path):
    path, data = store
    out = tmp_path / "hits.jsonl"
    assert cli("query", "--store", path, "--input", data / "queries.jsonl", "--out", out, "--mode", "bm25").code == 0
    lines = (data / "queries.jsonl").read_text().splitlines()
    lines[1] = json.dumps({"id": "q1", "text": "something else entirely"})
    (data / "queries.jsonl").write_text("\n".join(lines) + "\n")
    res = cli("query", "--store", path, "--input", data / "queries.jsonl", "--out", out, "--mode", "bm25")
    assert res.code == 2 and "the input changed since" in res.err


def _recipe(tmp_path: Path, data: Path, **eval_section) -> Path:
    recipe = {"model": {"name": "tiny-bert"},
              "data": {"task": "retrieval", "train": str(data / "pairs.jsonl"), "eval": str(data / "queries.jsonl"),
                       "max_length": 64,
                       "retrieval": {"documents": str(data / "documents.jsonl"), "qrels": str(data / "qrels.tsv"),
                                     "chunk_tokens": 32, "overlap": 8}},
              "method": {"name": "contrastive"},
              "train": {"epochs": 20, "batch_size": 4, "lr": 1.0e-3}, "eval": eval_section}
    path = tmp_path / "retrieval.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_eval_through_the_store_matches_exact_search_and_scores_bm25(store, cli, tmp_path):
    path, data = store
    exact = json.loads(cli("eval", _recipe(tmp_path, data), "--json").out)
    res = cli("eval", _recipe(tmp_path, data, store=str(path)), "--json")
    assert res.code == 0, res.err
    through = json.loads(res.out)
    # A tiny store's HNSW search is exact: the same documents in the same order, per query.
    assert {q: s["top10"] for q, s in through["per_query"].items()} == \
        {q: s["top10"] for q, s in exact["per_query"].items()}
    assert through["ndcg@10"] == pytest.approx(exact["ndcg@10"])
    bm25 = json.loads(cli("eval", _recipe(tmp_path, data, store=str(path), search="bm25"), "--json").out)
    assert bm25["search"].startswith("bm25") and bm25["ndcg@10"] > 0.5  # the queries share words with their answers
    other = _recipe(tmp_path, data, store=str(path))
    raw = yaml.safe_load(other.read_text())
    raw["model"]["name"] = "minilm"
    other.write_text(yaml.safe_dump(raw))
    res = cli("eval", other)
    assert res.code == 2 and "(the store has tiny-bert)" in res.err


def test_a_retrieval_run_is_the_stores_encoder_and_a_classifier_is_refused(tmp_path, cli, write_recipe):
    data = tmp_path / "data"
    shutil.copytree(ASSETS, data)
    recipe = _recipe(tmp_path, data)
    assert cli("train", recipe, "--output", tmp_path / "run").code == 0
    run = tmp_path / "run"
    store = tmp_path / "trained.db"
    res = cli("index", data / "documents.jsonl", "--id-column", "id", "--store", store, "--encoder", run,
              "--chunk-tokens", "32", "--overlap", "8")
    assert res.code == 0, res.err
    evaluated = json.loads(cli("eval", run, "--set", f"eval.store={store}", "--json").out)
    assert evaluated["ndcg@10"] == pytest.approx(json.loads((run / "manifest.json").read_text())
                                                 ["final_eval"]["ndcg@10"])
    hits = json.loads(cli("query", "--store", store, "where does lava come from", "--json", "-k", "1").out)["hits"]
    assert hits[0]["locator"] == "id=d0"
    # Retrained (final/ rewritten): the stored vectors are stale, the query is refused.
    weights = next((run / "final").glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    res = cli("query", "--store", store, "lava")
    assert res.code == 2 and "changed since the store was built" in res.err
    (data / "labels.jsonl").write_text("".join(json.dumps({"text": f"row {i}", "label": i % 2}) + "\n"
                                               for i in range(8)))
    sst = write_recipe({"model": {"name": "tiny-bert"},
                        "data": {"task": "classification", "train": str(data / "labels.jsonl"), "eval_fraction": 0},
                        "method": {"name": "full"}, "train": {"max_steps": 1}}, "cls.yaml")
    assert cli("train", sst, "--output", tmp_path / "cls").code == 0
    res = cli("index", data / "documents.jsonl", "--store", tmp_path / "cls.db", "--encoder", tmp_path / "cls")
    assert res.code == 2 and "not a retrieval encoder" in res.err and "a retrieval encoder maps queries" in res.err


def test_single_query_per_chunk_and_per_document(store, cli):
    path, _ = store
    chunks = json.loads(cli("query", "--store", path, "lava crater", "-k", "3", "--per", "chunk", "--json").out)
    assert chunks["per"] == "chunk" and len(chunks["hits"]) == 3 and "chunks" not in chunks["hits"][0]
    docs = json.loads(cli("query", "--store", path, "lava crater", "-k", "20", "--json").out)["hits"]
    # 12 documents in 13 chunks: -k 20 documents gives each document once, its chunks inside.
    assert len(docs) == 12 and len({d["document"] for d in docs}) == 12
    assert sum(len(d["chunks"]) for d in docs) == 13
    res = cli("query", "--store", path, "lava", "--per", "page")
    assert res.code == 2 and "choose document or chunk" in res.err
    res = cli("query", "--store", path, "--input", path.parent / "data" / "queries.jsonl")
    assert res.code == 2 and "--input FILE with --out FILE" in res.err
