"""`llmtune index / query / ask` from the command line: summaries, skipped files, JSON,
exit codes, answering with a tiny causal LM, and ICL demonstrations drawn from a store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from index_helpers import cached_models, llmtune_server, milvus_server  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread", "cached_models")

NO_HEAVY = """
import sys
from llmtune.cli import app
from llmtune.cli.common import run_app
for verb in ("index", "query", "ask"):
    sys.argv = ["llmtune", verb, "--help"]
    assert run_app(app) == 0
heavy = sorted(m for m in ("torch", "transformers", "pymilvus", "milvus_lite", "bs4", "pypdf") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def test_help_of_the_store_commands_imports_no_heavy_library():
    env = {**os.environ, "COLUMNS": "400"}  # one help line per option, so phrases are not wrapped
    res = subprocess.run([sys.executable, "-c", NO_HEAVY], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    assert "HEAVY=\n" in res.stdout
    words = " ".join(res.stdout.split())  # help text wraps wherever the option column ends
    assert "reciprocal rank fusion" in words and "source=GLOB" in words


GLACIERS = "Glaciers carve U-shaped valleys as they slide downhill over centuries."
KETTLES = "A kettle whistles when steam escapes through a narrow spout."


def _docs(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "glaciers.md").write_text(GLACIERS)
    (docs / "kettles.txt").write_text(KETTLES)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R")
    (docs / "blob.bin").write_bytes(bytes(range(256)))
    (docs / "fake.txt").write_bytes(b"looks like text\x00\x00\xff but is not")
    return docs


def test_index_reports_skipped_files_and_query_finds_the_rest(tmp_path, cli):
    docs, store = _docs(tmp_path), str(tmp_path / "kb.db")
    res = cli("index", docs, "--store", store, "--json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert (summary["added"], summary["chunks_in_store"]) == (2, 2)
    reasons = {s["source"].rsplit("/", 1)[1]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"broken.pdf", "blob.bin", "fake.txt"}
    assert reasons["broken.pdf"].startswith("not a readable PDF")
    assert reasons["blob.bin"] == "unsupported file type '.bin'"
    assert reasons["fake.txt"] == "binary content (NUL bytes), not text"
    assert "index: 2 added, 0 updated, 0 removed, 0 unchanged, 3 skipped" in res.err
    assert "fake.txt: skipped, binary content" in res.err

    res = cli("query", "--store", store, "why does a kettle whistle", "-k", "1", "--json")
    assert res.code == 0, res.err
    [hit] = json.loads(res.out)["hits"]
    assert hit["source"] == str((docs / "kettles.txt").resolve()) and (hit["start"], hit["end"]) == (0, len(KETTLES))
    plain = cli("query", "--store", store, "valleys", "--mode", "bm25", "-k", "1")
    assert plain.code == 0 and f"glaciers.md chars 0-{len(GLACIERS)}" in plain.out and "U-shaped valleys" in plain.out


def test_mistakes_exit_2_with_the_fix(tmp_path, cli):
    docs, store = _docs(tmp_path), str(tmp_path / "kb.db")
    cases = [
        (("index", tmp_path / "nowhere", "--store", store), "nowhere: no such file or folder"),
        (("index", docs, "--store", tmp_path / "kb"), "a local store is a path ending in .db"),
        (("index", docs, "--store", tmp_path / "no" / "kb.db"), "does not exist; create it first"),
        (("query", "--store", store, "x"), "no such store; build it with `llmtune index"),
        (("index", docs, "--store", store, "--chunk-tokens", "600"), "reads at most 256 tokens per text"),
    ]
    for args, message in cases:
        res = cli(*args)
        assert res.code == 2 and message in res.err, (args, res.err)
    assert cli("index", docs, "--store", store).code == 0
    for args, message in [
        (("query", "--store", store, "x", "--mode", "sparse"), "--mode 'sparse': choose one of dense, bm25, hybrid"),
        (("query", "--store", store, "x", "--filter", "path=*.md"), "write source=GLOB"),
        (("query", "--store", store, "x", "--model", "tiny-bert"), "(the store has minilm)"),
        (("index", docs, "--store", store, "--model", "tiny-bert"), "Drop the option to use the store's settings"),
        (("ask", "--store", store, "x", "--model", "minilm", "--min-score", "0"), "is an encoder"),
    ]:
        res = cli(*args)
        assert res.code == 2 and message in res.err, (args, res.err)
        assert "Traceback" not in res.err


def test_ask_answers_with_the_sources_it_was_given(tmp_path, cli, write_recipe):
    docs, store = _docs(tmp_path), str(tmp_path / "kb.db")
    assert cli("index", docs, "--store", store).code == 0
    res = cli("ask", "--store", store, "How are valleys carved?", "--model", "tiny-llama", "-k", "2",
              "--max-new-tokens", "6", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    hits = json.loads(cli("query", "--store", store, "How are valleys carved?", "-k", "2", "--json").out)["hits"]
    # tiny-llama has 512 positions: both short chunks fit, in rank order, with their sources.
    assert [s["source"] for s in out["sources"]] == [h["source"] for h in hits] and out["sources_dropped"] == 0
    assert out["sources"][0]["source"].endswith("glaciers.md") and isinstance(out["answer"], str)
    assert out["model"] == "tiny-llama" and out["prompt_tokens"] > 20

    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "Glaciers carve valleys."}\n')
    recipe = write_recipe({"model": {"name": "tiny-llama"}, "data": {"task": "causal_lm", "train": str(train)},
                           "method": {"name": "lora"}})
    plain = cli("ask", "--store", store, "How are valleys carved?", "--recipe", recipe, "-k", "1",
                "--max-new-tokens", "4")
    assert plain.code == 0, plain.err
    assert plain.out.rstrip().endswith(f"[1] {(docs / 'glaciers.md').resolve()} chars 0-{len(GLACIERS)}")


def test_ask_says_no_source_answers_below_the_threshold_without_loading_a_model(tmp_path, cli, monkeypatch):
    from llmtune.index import answer

    docs, store = _docs(tmp_path), str(tmp_path / "kb.db")
    assert cli("index", docs, "--store", store).code == 0
    monkeypatch.setattr(answer, "load_answer_model", lambda *a, **kw: pytest.fail("a model was loaded"))
    res = cli("ask", "--store", store, "Who won the 1966 football World Cup?", "--min-score", "0.9", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["answered"] is False and out["answer"] == answer.NO_SOURCE and out["best_score"] < 0.9
    assert out["nearest"] and out["min_score"] == 0.9
    plain = cli("ask", "--store", store, "Who won the 1966 football World Cup?", "--min-score", "0.9")
    assert plain.out.startswith(answer.NO_SOURCE) and "below --min-score 0.9" in plain.out


def test_answers_cite_the_sources_they_take_their_words_from():
    from llmtune.index.analyzer import Analyzer, analyzer_settings
    from llmtune.index.answer import cite

    sources = [{"text": KETTLES}, {"text": GLACIERS}]
    text, added = cite("Glaciers slide downhill and carve valleys. I think so. Steam escapes [1].", sources,
                       Analyzer(analyzer_settings("english")))
    assert text == "Glaciers slide downhill and carve valleys [2]. I think so. Steam escapes [1]." and added == [2]


def test_index_and_query_through_a_server(tmp_path, cli, milvus_server):
    docs = _docs(tmp_path)
    res = cli("index", docs, "--store", milvus_server, "--collection", "cli_round_trip", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["added"] == 2
    again = json.loads(cli("index", docs, "--store", milvus_server, "--collection", "cli_round_trip", "--json").out)
    assert (again["unchanged"], again["chunks_written"]) == (2, 0)
    res = cli("query", "--store", milvus_server, "--collection", "cli_round_trip", "steam", "--mode", "bm25", "--json")
    assert json.loads(res.out)["hits"][0]["source"].endswith("kettles.txt")
    bad = cli("query", "--store", "http://127.0.0.1:9", "x")
    assert bad.code == 2 and "cannot reach a Milvus server" in bad.err


def test_a_store_served_by_llmtune_answers_dense_queries_with_the_fast_path(tmp_path, cli, llmtune_server):
    """`python -m llmtune.index.serve` is Milvus Lite's server with the fast search path on in
    the serving process: the same round trip as through `milvus-lite server`."""
    uri, log = llmtune_server
    docs = _docs(tmp_path)
    assert cli("index", docs, "--store", uri, "--json").code == 0
    res = cli("query", "--store", uri, "kettles boil water into steam", "--mode", "dense", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["hits"][0]["source"].endswith("kettles.txt")
    assert "llmtune fast search path: on" in log.read_text()


@pytest.mark.slow
def test_icl_demonstrations_come_from_the_store(tmp_path, cli, write_recipe):
    pool = [("The cat purred on the sofa.", "pets"), ("A kitten chased the yarn.", "pets"),
            ("The striker scored a late goal.", "sport"), ("The team won the league.", "sport")]
    queries = [("My cat sleeps all day.", "pets"), ("The goalkeeper saved a penalty.", "sport")]
    for name, rows in (("pool.jsonl", pool), ("dev.jsonl", queries)):
        (tmp_path / name).write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    assert cli("index", tmp_path / "pool.jsonl", "--store", tmp_path / "demos.db").code == 0
    recipe = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "classification", "train": "pool.jsonl", "eval": "dev.jsonl"},
        "method": {"name": "in-context"},
        "eval": {"shots": 2, "selection": "store", "store": "demos.db", "templates": ["{{ text }} Topic:"]},
    })
    res = cli("eval", recipe, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    # The store path was resolved against the recipe's folder when the recipe loaded.
    assert out["prompting"]["selection"] == "store" and out["prompting"]["store"] == str(tmp_path / "demos.db")
    cat, goal = (s["prompt"] for s in out["samples"])
    # Nearest last: the two pet sentences precede the cat query, the two sport ones the goalkeeper.
    assert cat.count("Topic: pets") == 2 and "Topic: sport" not in cat and cat.endswith("My cat sleeps all day. Topic:")
    assert goal.count("Topic: sport") == 2 and "Topic: pets" not in goal


def test_a_store_open_in_another_process_is_a_clear_error(tmp_path, cli, monkeypatch):
    docs, store = _docs(tmp_path), str(tmp_path / "kb.db")
    assert cli("index", docs, "--store", store).code == 0
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pymilvus import MilvusClient\n"
                               f"MilvusClient({store!r})\nprint('open', flush=True)\ntime.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        res = cli("query", "--store", store, "steam")
        assert res.code == 2 and "is open in another process" in res.err and "python -m llmtune.index.serve --data-dir" in res.err
        # Two runs started at the same instant: both find the store free, one opens it first.
        from llmtune.index import store as store_module

        real, calls = store_module._held_elsewhere, []

        def raced(loc):  # the first check runs before the other process took the store
            calls.append(loc)
            return False if len(calls) == 1 else real(loc)

        monkeypatch.setattr(store_module, "_held_elsewhere", raced)
        res = cli("index", docs, "--store", store)
        assert len(calls) == 2 and res.code == 2, res.err
        assert "is open in another process" in res.err and "Open local milvus failed" not in res.err
    finally:
        holder.kill()
        holder.wait()
