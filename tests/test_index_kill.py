"""Kill-safety of `llmtune index`: a run SIGKILLed mid-way (a real subprocess) and a run that
fails at each step of a commit leave every file with exactly one visible version (old or
new, never half of one, never both), and the next run completes the work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from index_helpers import cached_models, visible_versions  # noqa: F401

from llmtune.index.store import Store
from llmtune.index.sync import index_paths

pytestmark = pytest.mark.usefixtures("one_thread", "cached_models")

WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()


def _text(i: int, era: str) -> str:
    # Every chunk names the era (old or new) several times.
    words = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(8))
    return f"{era} {i}: {words} {era}. {era} {words} {era}. {era} {words} {era}."


def _write_all(docs, n: int, era: str) -> None:
    docs.mkdir(exist_ok=True)
    for i in range(n):
        (docs / f"f{i:03d}.txt").write_text(_text(i, era))


def _eras(store: str) -> dict[str, str]:
    """{source: 'old' | 'new'} from the chunks a query sees; a file never shows both."""
    from llmtune.index.retrieve import Retriever, open_store

    st, settings = open_store(store, None, "llmtune")
    with st:
        rows = st.chunks_where(Retriever(st, settings).filter_expr(), ["source", "text"])
    eras: dict[str, set] = {}
    for row in rows:
        eras.setdefault(row["source"], set()).update(w for w in ("old", "new") if w in row["text"].split())
    assert all(len(e) == 1 for e in eras.values()), "a file shows chunks of two versions"
    return {s: e.pop() for s, e in eras.items()}


def _consistent(store: str, n: int) -> dict[str, str]:
    visible = visible_versions(store)  # asserts one version per file, whole
    eras = _eras(store)
    assert len(visible) == n and set(eras) == set(visible)
    return eras


def _no_stale_chunks(store: str, summary: dict) -> None:
    """Everything in the store is some file's committed chunks: nothing hidden left behind."""
    assert summary["chunks_in_store"] == sum(chunks for _, chunks, _ in visible_versions(store).values())


def test_sigkill_mid_run_leaves_the_store_usable_and_the_next_run_completes(tmp_path):
    n = 120
    docs, store = tmp_path / "docs", str(tmp_path / "kill.db")
    _write_all(docs, n, "old")
    per_file = index_paths([docs], store, model="tiny-bert", chunk_tokens=16, overlap=0)["chunks_in_store"] // n
    _write_all(docs, n, "new")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "llmtune", "index", str(docs), "--store", store,
                             "--commit-chunks", str(2 * per_file)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=env)
    commits = 0
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # the run logs one line per committed group when not on a terminal
        commits += "committed" in line
        if commits == 3 or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL and commits == 3

    eras = _consistent(store, n)
    done = sum(e == "new" for e in eras.values())
    assert 0 < done < n, f"the kill was meant to land mid-run ({done} of {n} files updated)"

    resumed = index_paths([docs], store)
    assert resumed["unchanged"] == done and resumed["updated"] == n - done
    assert set(_consistent(store, n).values()) == {"new"}
    _no_stale_chunks(store, resumed)
    from llmtune.index.bm25 import N_ROW, STALE_FLAG
    from llmtune.index.retrieve import open_store

    st, _ = open_store(store, None, "llmtune")
    with st:  # the killed run's BM25 statistics were recounted
        assert not st.flag(STALE_FLAG) and st.term_dfs([N_ROW])[N_ROW] == st.count_chunks()


# (Store method, state writes done before it in the run, step of the module docstring of sync):
# the first group takes three state writes, so these all fail inside the second group.
CRASH_POINTS = [("put_states", 3, "1: new versions hidden"), ("insert_chunks", 4, "2: chunks inserted"),
                ("put_states", 4, "3: the flip"), ("delete_versions", 5, "4: old chunks deleted"),
                ("put_states", 5, "5: nothing hidden")]


@pytest.mark.parametrize("method,puts_before,step", CRASH_POINTS, ids=[c[2] for c in CRASH_POINTS])
def test_a_failure_at_any_step_of_a_commit_leaves_one_version_per_file(tmp_path, monkeypatch, method, puts_before,
                                                                      step):
    n = 4
    docs, store = tmp_path / "docs", str(tmp_path / "crash.db")
    _write_all(docs, n, "old")
    per_file = index_paths([docs], store, model="tiny-bert", chunk_tokens=16, overlap=0)["chunks_in_store"] // n
    _write_all(docs, n, "new")

    real, real_put = getattr(Store, method), Store.put_states
    puts = []

    def counting_put(self, states):
        if method == "put_states" and len(puts) == puts_before:
            raise RuntimeError(f"simulated crash at step {step}")
        real_put(self, states)
        puts.append(len(states))

    def failing(self, *args, **kwargs):
        if len(puts) == puts_before:
            raise RuntimeError(f"simulated crash at step {step}")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "put_states", counting_put)
    if method != "put_states":
        monkeypatch.setattr(Store, method, failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        index_paths([docs], store, commit_chunks=2 * per_file)  # groups of two files; the second one fails
    monkeypatch.setattr(Store, "put_states", real_put)
    monkeypatch.setattr(Store, method, real)

    eras = _consistent(store, n)
    assert sorted(eras.values()).count("new") >= 2  # the first group had committed
    resumed = index_paths([docs], store)
    assert set(_consistent(store, n).values()) == {"new"}
    _no_stale_chunks(store, resumed)
