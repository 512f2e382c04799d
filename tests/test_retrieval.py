"""Retrieval recipes: the data (pairs, queries, documents, qrels) with file:row errors, the exact
document-level evaluation, and the contrastive method end to end on tiny-bert (trains, saves,
loads back, scores the same, resumes, and feeds `llmtune embed`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from llmtune.errors import UserError

ASSETS = Path(__file__).parent / "assets" / "retrieval"


@pytest.fixture
def collection(tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(ASSETS, folder)
    return folder


def write_recipe(tmp_path: Path, data: Path, method: dict | None = None, train: dict | None = None,
                 **data_extra) -> Path:
    recipe = {
        "model": {"name": "tiny-bert"},
        "data": {"task": "retrieval", "train": str(data / "pairs.jsonl"), "eval": str(data / "queries.jsonl"),
                 "max_length": 64,
                 "retrieval": {"documents": str(data / "documents.jsonl"), "qrels": str(data / "qrels.tsv"),
                               "chunk_tokens": 32, "overlap": 8}, **data_extra},
        "method": method or {"name": "contrastive"},
        "train": {"epochs": 30, "batch_size": 4, "lr": 1.0e-3, "log_every": 10, **(train or {})},
    }
    path = tmp_path / "retrieval.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _read(path: Path):
    from llmtune.recipe import load_recipe

    return load_recipe(path).recipe


# -- data ---------------------------------------------------------------------------------------
def test_collection_reads_queries_documents_and_only_the_eval_queries_judgments(tmp_path, collection):
    from llmtune.data.retrieval import read_collection

    with open(collection / "qrels.tsv", "a") as fh:
        fh.write("q-other\td3\t2\n")  # a query of another split: ignored
    r = _read(write_recipe(tmp_path, collection))
    got = read_collection(r.data)
    assert len(got.queries) == 8 and len(got.documents) == 12
    assert set(got.qrels) == set(got.queries) and got.qrels["q0"] == {"d0": 1, "d5": 0}
    assert read_collection(r.data, limit=3).queries == dict(list(got.queries.items())[:3])


@pytest.mark.parametrize("file, line, message", [
    ("qrels.tsv", "q0\td99\t1", r"qrels.tsv:\d+: document 'd99' is not in the collection"),
    ("qrels.tsv", "q0\td1", r"qrels.tsv:18: 2 fields but the header has 3"),
    ("qrels.tsv", "q0\td1\thigh", r"qrels.tsv:\d+: relevance 'high' is not a number"),
    ("queries.jsonl", '{"id": "q9", "text": "  "}', r"queries.jsonl:9: the query text \('text'\) is empty"),
    ("queries.jsonl", '{"text": "no id"}', r"queries.jsonl:9: no 'id' column \(the query id\)"),
    ("queries.jsonl", '{"id": "q1", "text": "again"}', r"queries.jsonl:9: query id 'q1' again \(first at .*:2\)"),
])
def test_bad_collection_rows_exit_2_naming_file_and_row(tmp_path, collection, file, line, message):
    from llmtune.data.retrieval import read_collection

    with open(collection / file, "a") as fh:
        fh.write(line + "\n")
    with pytest.raises(UserError, match=message):
        read_collection(_read(write_recipe(tmp_path, collection)).data)


def test_a_qrels_file_without_a_relevance_column_names_the_row(tmp_path, collection):
    from llmtune.data.retrieval import read_collection

    (collection / "qrels.jsonl").write_text('{"query_id": "q0", "doc_id": "d0"}\n')
    r = _read(write_recipe(tmp_path, collection))
    r.data.retrieval.qrels = str(collection / "qrels.jsonl")
    with pytest.raises(UserError, match=r"qrels.jsonl:1: no 'relevance' column \(the judgment's relevance\)"):
        read_collection(r.data)


@pytest.mark.parametrize("row, message", [
    ({"query": "q", "text": "x"}, r"pairs.jsonl:9: no 'positive' column \(the positive text\)"),
    ({"query": "", "positive": "x"}, r"pairs.jsonl:9: the query \('query'\) is empty"),
    ({"positive": "x"}, r"pairs.jsonl:9: no 'query' column"),
])
def test_bad_pairs_exit_2_naming_file_and_row(tmp_path, collection, row, message):
    from llmtune.data.retrieval import read_pairs

    with open(collection / "pairs.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    r = _read(write_recipe(tmp_path, collection))
    with pytest.raises(UserError, match=message):
        read_pairs(r.data.train, r.data.columns)


def test_recipe_checks_the_retrieval_sections(tmp_path, collection):
    from llmtune.recipe import load_recipe

    path = write_recipe(tmp_path, collection)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["retrieval"]["qrels"] = "missing.tsv"
    del raw["data"]["eval"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as err:
        load_recipe(path)
    text = str(err.value) + " ".join(getattr(err.value, "problems", []) or [])
    assert "missing.tsv" in text and "file not found" in text
    assert "give both, or neither" in text
    raw["data"]["eval"] = str(collection / "queries.jsonl")
    raw["data"]["retrieval"]["qrels"] = "data/qrels.tsv"  # relative to the recipe's folder
    raw["eval"] = {"search": "hybrid"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as err:
        load_recipe(path)
    assert "needs eval.store" in str(err.value) + " ".join(getattr(err.value, "problems", []) or []) or \
        "set eval.store" in str(err.value) + " ".join(getattr(err.value, "problems", []) or [])
    del raw["eval"]
    path.write_text(yaml.safe_dump(raw))
    assert load_recipe(path).recipe.data.retrieval.qrels == str(collection / "qrels.tsv")


# -- the evaluation ---------------------------------------------------------------------------------
def test_exact_search_ranks_documents_by_their_best_window():
    """The ranking equals a plain recomputation: every window embedded, a document scored by
    its best window; a document without windows (empty text) is never ranked."""
    from llmtune.evaluate.retrieval import document_windows, rank_documents
    from llmtune.models.builtin import build_tiny, load_tiny_tokenizer
    from llmtune.models.encoder import Encoder

    encoder = Encoder(load_tiny_tokenizer(), build_tiny("tiny-bert", "retrieval"), normalize=True, max_length=64,
                      precision="fp32")
    docs = {f"d{i}": " ".join(f"word{(i * 7 + j) % 23}" for j in range(5 + 9 * i)) for i in range(8)}
    docs["empty"] = ""
    queries = {"a": "word3 word5", "b": "word11 word2 word9", "c": "word20"}
    run, info = rank_documents(encoder, queries, docs, chunk_tokens=12, overlap=3, depth=5)
    ids, owner = document_windows(encoder, docs, 12, 3)
    assert info["chunks"] == len(ids) > len(docs) and set(owner) == set(range(8))  # long ones span windows
    windows = encoder.embed_ids(ids)
    names = list(docs)
    for qid, text in queries.items():
        q = encoder.embed_ids(encoder.tokenize([text]))[0]
        best = {}
        for w, d in zip(windows, owner):
            best[names[d]] = max(best.get(names[d], -2.0), float(q @ w))
        # Random tiny weights put many scores within float noise of each other: compare scores.
        expected = sorted(best.values(), reverse=True)[:5]
        assert [best[d] for d in run[qid]] == pytest.approx(expected, abs=1e-5) and "empty" not in run[qid]


# -- batches ----------------------------------------------------------------------------------------
def test_batches_are_full_hold_no_text_twice_and_see_every_row_evenly():
    from collections import Counter

    from llmtune.methods.retrieval._batches import Row, plan

    # 30 queries; query 0 has 12 positives, the others one or two.
    rows = [Row(0, 100 + i, []) for i in range(12)] + [Row(q, 200 + q * 2 + j, []) for q in range(1, 30)
                                                      for j in range(1 + q % 2)]
    batches = plan(rows, 8, seed=0, epochs=3, max_steps=None)
    assert len(batches) == -(-3 * len(rows) // 8)
    for batch in batches:
        texts = [t for i in batch for t in rows[i].texts()]
        assert len(batch) == 8 and len(texts) == len(set(texts))
    seen = Counter(i for b in batches for i in b)
    assert set(seen) == set(range(len(rows)))
    # Query 0 can sit in a batch once, so its 12 rows share the 21 batches; the others come ~3 times.
    assert sum(seen[i] for i in range(12)) == len(batches) and all(2 <= seen[i] <= 4 for i in range(12, len(rows)))
    assert plan(rows, 8, seed=1, epochs=3, max_steps=None) != batches
    assert len(plan(rows, 8, seed=0, epochs=3, max_steps=7)) == 7


# -- the method, end to end -------------------------------------------------------------------------
def _eval(cli, target, *extra):
    res = cli("eval", target, "--json", *extra)
    assert res.code == 0, res.err
    return json.loads(res.out)


@pytest.mark.usefixtures("one_thread")
def test_contrastive_full_trains_saves_and_scores_the_same_loaded_back(tmp_path, collection, cli):
    recipe = write_recipe(tmp_path, collection)
    before = _eval(cli, recipe)
    res = cli("train", recipe, "--output", tmp_path / "run", "--json")
    assert res.code == 0, res.err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    after = manifest["final_eval"]
    assert after["ndcg@10"] > before["ndcg@10"] + 0.1 and after["mrr"] == 1.0  # it learnt the training queries
    assert manifest["eval_identity"]["metric"] == "ndcg@10" and manifest["eval_identity"]["rows"] == 8
    loaded = _eval(cli, tmp_path / "run")
    assert loaded["ndcg@10"] == pytest.approx(after["ndcg@10"]) and set(loaded["per_query"]) == {f"q{i}" for i in range(8)}
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["per_query"]["q0"]["top10"][0] == "d0"
    res = cli("embed", tmp_path / "run", collection / "documents.jsonl", "--out", tmp_path / "vecs.npy")
    assert res.code == 0, res.err
    import numpy as np

    vectors = np.load(tmp_path / "vecs.npy")
    assert vectors.shape == (12, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # eval.encoder: RUN (in-context learning's nearest demonstrations) embeds as `llmtune embed RUN` does.

    from llmtune.models.text_embeddings import load_text_encoder

    texts = [json.loads(line)["text"] for line in (collection / "documents.jsonl").read_text().splitlines()]
    icl = load_text_encoder(str(tmp_path / "run"), batch_size=4, max_length=64).embed(texts)
    assert np.allclose(icl, vectors, atol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_contrastive_lora_trains_adapters_only_and_compare_ranks_the_runs(tmp_path, collection, cli):
    lora = {"name": "contrastive", "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}}
    recipe = write_recipe(tmp_path, collection, method=lora, train={"lr": 5.0e-3})
    assert cli("train", recipe, "--output", tmp_path / "lora").code == 0
    manifest = json.loads((tmp_path / "lora" / "manifest.json").read_text())
    assert manifest["trainable_parameters"] < manifest["total_parameters"] / 20
    assert (tmp_path / "lora" / "final" / "adapter_config.json").is_file()
    assert _eval(cli, tmp_path / "lora")["ndcg@10"] == pytest.approx(manifest["final_eval"]["ndcg@10"])
    # Loaded without the method (the adapter onto its base, merged), it embeds as `llmtune embed` does.
    import numpy as np

    from llmtune.models.text_embeddings import load_text_encoder

    assert cli("embed", tmp_path / "lora", collection / "queries.jsonl", "--out", tmp_path / "q.npy").code == 0
    texts = [json.loads(line)["text"] for line in (collection / "queries.jsonl").read_text().splitlines()]
    icl = load_text_encoder(str(tmp_path / "lora"), batch_size=4, max_length=64).embed(texts)
    assert np.allclose(icl, np.load(tmp_path / "q.npy"), atol=1e-5)
    full = write_recipe(tmp_path, collection, train={"max_steps": 5})
    assert cli("train", full, "--output", tmp_path / "full").code == 0
    res = cli("compare", tmp_path / "lora", tmp_path / "full", "--out", tmp_path / "cmp", "--json")
    assert res.code == 0, res.err
    table = json.loads(res.out)
    assert table["metric"] == "ndcg@10" and table["higher_is_better"]
    assert {row["name"] for row in table["rows"]} == {"lora", "full"}


@pytest.mark.usefixtures("one_thread")
def test_a_stopped_run_resumes_from_its_checkpoint(tmp_path, collection, cli):
    recipe = write_recipe(tmp_path, collection, train={"max_steps": 4, "save_every": 2, "epochs": 1})
    assert cli("train", recipe, "--output", tmp_path / "run").code == 0
    assert (tmp_path / "run" / "checkpoints" / "step-4" / "state.json").is_file()
    res = cli("train", recipe, "--output", tmp_path / "run", "--resume", "--set", "train.max_steps=6")
    assert res.code == 0, res.err
    assert "resumed from" in res.err and "(step 4 of 6)" in res.err
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["steps"] == 6


@pytest.mark.usefixtures("one_thread")
def test_mined_hard_negatives_are_never_the_querys_own_positives(tmp_path, collection):
    from llmtune.console import Reporter
    from llmtune.data.retrieval import read_pairs
    from llmtune.methods.retrieval._mining import mine
    from llmtune.methods.retrieval._retrieval_eval import load_encoder, retrieval_encoder
    from llmtune.methods.registry import method_for

    r = _read(write_recipe(tmp_path, collection, method={"name": "contrastive", "hard_negatives": 2}))
    pairs = read_pairs(r.data.train, r.data.columns)
    tok, body = load_encoder(r, method_for(r.method), None)
    mined = mine(retrieval_encoder(tok, body, r, "fp32"), r, pairs, 2, 1, Reporter(quiet=True))
    positives = {p.query: p.positive for p in pairs}
    assert set(mined) == set(positives)
    for query, negatives in mined.items():
        assert len(negatives) == 2 and positives[query] not in negatives
