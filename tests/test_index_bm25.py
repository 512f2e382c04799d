"""BM25 as llmtune computes it: a store updated incrementally ranks every query exactly as a
store built from scratch over the same files, embedded and served; the English analyzer
(stop words, stemming) is recorded in the store; a killed run's statistics are recounted."""

from __future__ import annotations

import random
import uuid

import pytest
from index_helpers import cached_models, milvus_server, store_at  # noqa: F401

from llmtune.errors import UserError
from llmtune.index.analyzer import Analyzer, analyzer_settings
from llmtune.index.bm25 import N_ROW, idf
from llmtune.index.retrieve import Retriever, open_store
from llmtune.index.sync import index_paths

pytestmark = pytest.mark.usefixtures("one_thread", "cached_models")

WORDS = ("wing flow flows flowing pressure shock boundary layer heat transfer plate cylinder nozzle jet "
         "supersonic subsonic turbulent laminar drag lift vortex wake panel buckling shell stress").split()


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) + rng.choice(["", "", " the", " of a"]) for _ in range(n)) + "."


def _corpus(rng: random.Random, names: range) -> dict[str, str]:
    return {f"d{i:02d}.txt": _text(rng, rng.randint(3, 120)) for i in names}


def _write(folder, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def _rankings(store: str, collection: str, queries: list[str], mode: str) -> list[list[tuple]]:
    """Per query: [(score, chunk)] in rank order (ties are listed by source and chunk)."""
    st, settings = open_store(store, None, collection)
    with st:
        return [[(h.score, (h.source.rsplit("/", 1)[1], h.chunk, h.text)) for h in hits]
                for hits in Retriever(st, settings).search(queries, 1000, mode)]


def _same_dense(a: list[list[tuple]], b: list[list[tuple]]) -> None:
    """Dense scores are cosines of vectors embedded in other batches (padding moves the last
    float bits): the same chunks, scores within 1e-5, so ranks differ only among near-ties."""
    for qa, qb in zip(a, b, strict=True):
        sa, sb = {c: s for s, c in qa}, {c: s for s, c in qb}
        assert sa.keys() == sb.keys()
        assert max((abs(sa[c] - sb[c]) for c in sa), default=0) < 1e-5


def test_incremental_store_ranks_exactly_as_a_fresh_build(tmp_path, store_at):
    store, collection = store_at
    rng = random.Random(7)
    docs = tmp_path / "docs"
    files = _corpus(rng, range(10))
    files["twin.txt"] = files["d03.txt"]  # an unchanged duplicate of a file that will change
    _write(docs, files)
    index_paths([docs], store, collection=collection, chunk_tokens=32, overlap=8)
    for round_ in range(2):  # change, delete and add files over several runs
        for name in rng.sample(sorted(files), 4):
            (docs / name).write_text(files[name] + " " + _text(rng, rng.randint(1, 40)))
        for name in rng.sample(sorted(files), 2):
            (docs / name).unlink()
            del files[name]
        files.update(new := _corpus(rng, range(30 + 3 * round_, 33 + 3 * round_)))
        _write(docs, new)
        summary = index_paths([docs], store, collection=collection)
        assert summary["removed"] == 2 and summary["added"] == 3
        files = {p.name: p.read_text() for p in docs.iterdir()}
    fresh_docs = tmp_path / "fresh" / "docs"  # same names, so sources sort alike
    _write(fresh_docs, files)
    fresh = (str(tmp_path / "fresh.db"), "llmtune") if store.endswith(".db") else (store, f"f_{uuid.uuid4().hex[:8]}")
    index_paths([fresh_docs], fresh[0], collection=fresh[1], chunk_tokens=32, overlap=8)

    queries = [" ".join(rng.sample(WORDS, rng.randint(1, 4))) for _ in range(24)] + ["the flowing", "zzz"]
    for mode in ("bm25", "hybrid"):  # BM25 scores exactly equal, so do the fused ranks
        assert _rankings(store, collection, queries, mode) == _rankings(*fresh, queries, mode), mode
    _same_dense(_rankings(store, collection, queries, "dense"), _rankings(*fresh, queries, "dense"))
    st, _ = open_store(store, None, collection)
    with st:
        assert st.term_dfs([N_ROW])[N_ROW] == st.count_chunks()


def test_a_killed_runs_statistics_are_recounted(tmp_path, monkeypatch):
    from llmtune.index import commit as commit_module

    rng = random.Random(3)
    docs, store = tmp_path / "docs", str(tmp_path / "s.db")
    _write(docs, _corpus(rng, range(6)))
    index_paths([docs], store, chunk_tokens=32, overlap=8)
    before = _rankings(store, "llmtune", ["flow shock", "drag"], "bm25")
    (docs / "d01.txt").write_text(_text(rng, 50))
    (docs / "d02.txt").unlink()

    def killed(st, *a, **kw):
        raise KeyboardInterrupt  # the run dies between its chunks' insert and the statistics' update

    monkeypatch.setattr(commit_module.TermDelta, "apply", killed)
    with pytest.raises(KeyboardInterrupt):
        index_paths([docs], store)
    monkeypatch.undo()
    index_paths([docs], store)  # finds the stale mark and recounts
    fresh = tmp_path / "fresh"
    _write(fresh / "docs", {p.name: p.read_text() for p in docs.iterdir()})
    index_paths([fresh / "docs"], str(fresh / "s.db"), chunk_tokens=32, overlap=8)
    queries = ["flow shock", "drag", "wing the plate"]
    assert _rankings(store, "llmtune", queries, "bm25") == _rankings(str(fresh / "s.db"), "llmtune", queries, "bm25")
    assert _rankings(store, "llmtune", ["flow shock", "drag"], "bm25") != before


def test_english_analyzer_stems_and_drops_stop_words():
    english = Analyzer(analyzer_settings(None))
    assert english.terms("The flows of THE flowing Flow") == ["flow", "flow", "flow"]
    plain = Analyzer(analyzer_settings("none"))
    assert plain.terms("The flows of flowing") == ["the", "flows", "of", "flowing"]
    assert Analyzer(analyzer_settings("German")).terms("Häuser und Häusern") == ["haus", "und", "haus"]
    with pytest.raises(UserError, match="--language 'klingon': choose one of .*english"):
        analyzer_settings("klingon")
    assert idf(10, 1) > idf(10, 5) > idf(10, 10) > 0


def test_the_store_records_its_analyzer_and_refuses_another(tmp_path):
    docs, store = tmp_path / "docs", str(tmp_path / "s.db")
    _write(docs, {"a.txt": "Flowing water flows downhill."})
    index_paths([docs], store, language="none")
    st, settings = open_store(store, None, "llmtune")
    with st:
        assert settings.analyzer["language"] == "none" and settings.bm25 == {"k1": 1.2, "b": 0.75}
        assert Retriever(st, settings).search(["flow"], 5, "bm25")[0] == []  # no stemming in this store
        assert Retriever(st, settings).search(["flows"], 5, "bm25")[0]
    with pytest.raises(UserError, match=r"--language english \(the store has none\)"):
        index_paths([docs], store, language="english")


def test_progress_moves_per_embedded_batch_and_an_unchanged_rerun_loads_no_model(tmp_path, monkeypatch, capsys):
    from contextlib import contextmanager

    from llmtune.console import Reporter
    from llmtune.index import encoding, progress

    docs, store = tmp_path / "docs", str(tmp_path / "s.db")
    _write(docs, {"long.txt": _text(random.Random(1), 400), "short.txt": "wing flow.", "skip.png": "x"})
    moves = []

    class Terminal(Reporter):
        @contextmanager
        def progress(self, total, description, completed=0, counter=""):
            yield lambda n=1, **fields: moves.append((n, fields))

    terminal = Terminal()
    terminal.interactive = True
    index_paths([docs], store, chunk_tokens=16, overlap=0, batch_size=4, reporter=terminal)
    embedded = [n for n, f in moves if n]
    assert len(embedded) >= 10  # one move per batch of 4 chunks, not one per file or group
    assert abs(sum(embedded) - 2) < 1e-6  # both text files, whole; the .png is no file done
    assert moves[-1][1]["skipped"] == 0 and "per_s" in moves[-1][1]

    (docs / "new.txt").write_text(_text(random.Random(2), 300))
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    capsys.readouterr()
    index_paths([docs], store, batch_size=4, reporter=Reporter())
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "chunks embedded" in ln]
    assert len(lines) >= 5 and "of 1 file(s)" in lines[0] and "chunks/s" in lines[-1]

    monkeypatch.setattr(encoding, "load_index_encoder", lambda *a, **kw: pytest.fail("the model was loaded"))
    again = index_paths([docs], store)
    assert again["unchanged"] == 3 and again["chunks_written"] == 0 and "load" not in again["seconds"]
