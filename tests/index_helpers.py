"""Shared pieces of the index tests: a Milvus Lite server on a free local port, stores in
both modes, a memo so each embedding model loads once per test session, and a check that
every file in a store shows exactly one version of its chunks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

_MODELS: dict = {}


@pytest.fixture
def cached_models(monkeypatch):
    """Load each embedding model once per session (MiniLM takes seconds to load)."""
    from llmtune.embed import loading

    real = loading.load_for_embedding

    def memo(source, trust_remote_code=False):
        if source not in _MODELS:
            _MODELS[source] = real(source, trust_remote_code=trust_remote_code)
        return _MODELS[source]

    monkeypatch.setattr(loading, "load_for_embedding", memo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(data: Path, command: list[str]):
    """Start a Milvus Lite gRPC server on a free 127.0.0.1 port; (process, URI, log path)."""
    port = _free_port()
    log_path = data.parent / f"{data.name}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([*command, "--data-dir", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()  # the child holds its own descriptor
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(uri, proc)
    except BaseException:
        _stop(proc)
        raise
    return proc, uri, log_path


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """`milvus-lite server` bound to 127.0.0.1 on a free port; its URI."""
    exe = shutil.which("milvus-lite", path=str(Path(sys.executable).parent)) or shutil.which("milvus-lite")
    if exe is None:
        pytest.fail("milvus-lite is not installed (pip install -e '.[test]')")
    proc, uri, _ = _serve(tmp_path_factory.mktemp("milvus-server"), [exe, "server"])
    try:
        yield uri
    finally:
        _stop(proc)


@pytest.fixture
def llmtune_server(tmp_path):
    """`python -m llmtune.index.serve` (Milvus Lite's server with the fast search path); (URI, log path)."""
    proc, uri, log_path = _serve(tmp_path / "llmtune-server", [sys.executable, "-m", "llmtune.index.serve"])
    try:
        yield uri, log_path
    finally:
        _stop(proc)


def _wait_ready(uri: str, proc, timeout: float = 60.0) -> None:
    from pymilvus import MilvusClient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"milvus-lite server exited with {proc.returncode}")
        try:
            client = MilvusClient(uri=uri, timeout=2)
            client.list_collections()
            client.close()
            return
        except Exception:  # not listening yet
            time.sleep(0.2)
    pytest.fail(f"milvus-lite server at {uri} not ready after {timeout:.0f} s")


@pytest.fixture(params=["lite", "server"])
def store_at(request, tmp_path):
    """(store, collection) for an empty store: a Milvus Lite .db, or a fresh collection on
    the server (each test its own)."""
    if request.param == "lite":
        return str(tmp_path / "store.db"), "llmtune"
    uri = request.getfixturevalue("milvus_server")
    return uri, f"t_{uuid.uuid4().hex[:12]}"


def visible_versions(store: str, collection: str = "llmtune") -> dict[str, tuple[str, int, set[str]]]:
    """{source: (committed version, its chunk count, versions of the chunks a query can see)},
    asserting along the way that no file shows chunks of two versions."""
    from llmtune.index.retrieve import Retriever, open_store

    st, settings = open_store(store, None, collection)
    with st:
        expr = Retriever(st, settings).filter_expr()
        states = st.file_states()
        seen: dict[str, list[str]] = {}
        for row in st.chunks_where(expr, ["source", "version"]):
            seen.setdefault(row["source"], []).append(row["version"])
    out = {}
    for source in set(states) | set(seen):
        versions = seen.get(source, [])
        state = states.get(source)
        assert state is not None, f"{source}: chunks without a state row"
        assert set(versions) <= {state.version}, f"{source}: sees {set(versions)}, committed {state.version}"
        assert len(versions) == (state.chunks if state.version else 0), f"{source}: half its chunks"
        out[source] = (state.version, state.chunks, set(versions))
    return out
