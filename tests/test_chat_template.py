"""The chat template is part of the run: fingerprinted in manifest.json; eval, export and
--resume (and `ask`, through warn_if_template_changed) warn when the tokenizer's template
is not the trained one; export carries the trained template."""

from __future__ import annotations

import json

import pytest

from conftest import DATA

pytestmark = pytest.mark.usefixtures("one_thread")


class Notes:
    def __init__(self):
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)

    def log(self, message):
        pass


def test_run_records_the_template_and_commands_warn_when_it_changed(cli, write_recipe, tmp_path):
    from transformers import AutoTokenizer

    from llmtune.models.builtin import load_tiny_tokenizer
    from llmtune.models.chat_template import template_hash

    recipe = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "sft", "train": str(DATA / "alpaca_tiny.json"), "eval_fraction": 0.1, "max_length": 48},
        "method": {"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
        "train": {"max_steps": 2, "batch_size": 4}, "eval": {"generate": False},
    })
    run = tmp_path / "run"
    res = cli("train", recipe, "--output", run)
    assert res.code == 0, res.err
    assert "alpaca rows rendered with the model's chat template" in res.err
    manifest = json.loads((run / "manifest.json").read_text())
    trained = template_hash(load_tiny_tokenizer())
    assert manifest["chat_template_hash"] == trained is not None
    assert manifest["data_summary"]["prompt_style"] == "chat"

    res = cli("export", run, "--out", tmp_path / "merged", "--merge")
    assert res.code == 0 and "warning" not in res.err, res.err
    assert template_hash(AutoTokenizer.from_pretrained(tmp_path / "merged")) == trained

    template = run / "final" / "chat_template.jinja"
    template.write_text(template.read_text() + "{# edited after training #}")
    edited = template_hash(AutoTokenizer.from_pretrained(run / "final"))
    for args in (("eval", run, "--limit", "2"), ("export", run, "--out", tmp_path / "adapter")):
        res = cli(*args)
        assert res.code == 0, res.err
        assert f"warning: {args[0]}: the run trained with chat template {trained}, but this tokenizer's is " \
               f"{edited}" in res.err


def test_warn_if_template_changed_for_ask_and_resume(tmp_path):
    from chat_fixtures import fixture_tokenizer

    from llmtune.models.chat_template import template_hash, warn_if_template_changed
    from llmtune.train.manifest import manifest_changes

    chatml, llama3 = fixture_tokenizer("chatml"), fixture_tokenizer("llama3")
    manifest = {"chat_template_hash": template_hash(chatml)}
    (tmp_path / "final").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for where in (manifest, tmp_path, tmp_path / "final", tmp_path / "manifest.json"):
        notes = Notes()
        assert not warn_if_template_changed(where, chatml, notes, "ask") and not notes.warnings
        assert warn_if_template_changed(where, llama3, notes, "ask")
        assert notes.warnings[0].startswith(f"ask: the run trained with chat template {template_hash(chatml)}")
    # A run from before the fingerprint: nothing to compare with, no noise.
    assert not warn_if_template_changed({"tokenizer_hash": "x"}, llama3, Notes())
    changed = manifest_changes(manifest, {"chat_template_hash": template_hash(llama3)})
    assert any("the chat template changed" in w for w in changed)


def test_export_says_when_training_used_the_plain_prompt(tmp_path):
    from llmtune.runs.export import template_notes

    (tmp_path / "final").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps({"data_summary": {"prompt_style": "plain"}}))
    notes = Notes()
    template_notes(tmp_path, tmp_path / "final", notes)
    assert "data.prompt_template (data.prompt_style: plain)" in notes.warnings[0]
