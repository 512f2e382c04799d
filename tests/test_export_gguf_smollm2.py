"""GGUF export of a real model: a SmolLM2-135M LoRA run (one training step is enough to make the
merge matter) exported as q8_0 passes the parity check, and its Modelfile carries SmolLM2's
ChatML as an Ollama TEMPLATE with its default system prompt and stop tokens."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.test_smollm2 import session_cache

# No one_thread: a 135M model uses both cores well.
pytestmark = pytest.mark.slow


def test_a_smollm2_lora_run_exports_to_gguf_and_checks(tmp_path_factory, tmp_path, cli):
    from llmtune.console import Reporter
    from llmtune.recipe.load import recipe_from_dict
    from llmtune.train.session import run_recipe

    raw = {"model": {"name": "smollm2-135m"},
           "data": {"task": "sft", "train": {"path": str(DATA / "alpaca_tiny.json"), "limit": 4},
                    "max_length": 48, "eval_fraction": 0.0},
           "method": {"name": "lora", "r": 8, "target_modules": "all-linear"},
           "train": {"max_steps": 1, "batch_size": 4, "lr": 1e-3, "log_every": 1}}
    # The session's cache: test_smollm2's conversion of the 4-bit file is made once and shared.
    with session_cache(tmp_path_factory.getbasetemp() / "cache" / "llmtune"):
        run_recipe(recipe_from_dict(raw), Reporter(quiet=True), output=tmp_path / "run")
        r = cli("export", tmp_path / "run", "--format", "gguf", "--quant", "q8_0", "--out", tmp_path / "gguf",
                "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["parity"]["conversion"]["relative"] <= 1e-5, doc["parity"]
    assert doc["tokenizer"]["pre"] == "gpt-2" and doc["tokenizer"]["tokens"] == 49152
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert "You are a helpful AI assistant named SmolLM" in modelfile  # the default system prompt
    assert '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and 'PARAMETER stop "<|im_start|>"' in modelfile
    assert os.path.getsize(Path(tmp_path / "gguf" / doc["file"])) < 160 * 2**20  # q8_0: ~138 MiB
