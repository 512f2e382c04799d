"""`method: {name: in-context}`: a prompted recipe names what it does, and runs through the same
session as every trained recipe (one lifecycle for every run directory)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(tmp_path, method: str = "in-context") -> dict:
    rows = [("a fine film", "positive"), ("dull and long", "negative"), ("great fun", "positive"),
            ("a waste of time", "negative"), ("lovely acting", "positive"), ("boring plot", "negative")]
    (tmp_path / "rows.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return {"model": {"name": "tiny-llama"},
            "data": {"task": "classification", "train": "rows.tsv", "eval": "rows.tsv",
                     "columns": {"text": "sentence"}, "labels": ["negative", "positive"], "max_length": 128},
            "method": {"name": method},
            "eval": {"shots": 2, "verbalizers": {"negative": "bad", "positive": "good"}}}


def test_a_prompted_run_is_a_run(cli, write_recipe, tmp_path):
    recipe = write_recipe(_recipe(tmp_path))
    run = tmp_path / "run"
    trained = cli("train", recipe, "--output", run, "--json")
    assert trained.code == 0, trained.err
    result = json.loads(trained.out)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["method"] == "in-context"
    assert manifest["steps"] == 0 and manifest["trainable_parameters"] == 0 and manifest["total_parameters"] > 0
    assert manifest["prompting"]["shots"] == 2 and manifest["eval_seconds"] > 0
    assert manifest["final_eval"]["accuracy"] == result["eval"]["accuracy"]
    assert manifest["eval_identity"]["metric"] == "accuracy" and manifest["eval_identity"]["rows"] == 6
    info = json.loads((run / "final" / "llmtune.json").read_text())
    assert info["method"] == "in-context" and not list((run / "final").glob("*.safetensors"))
    # The run scores as the recipe does (the same base model, prompts and demonstrations).
    again = cli("eval", run, "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out)["accuracy"] == result["eval"]["accuracy"] and (run / "eval.json").exists()
    recipe_eval = cli("eval", recipe, "--json")
    assert json.loads(recipe_eval.out)["accuracy"] == result["eval"]["accuracy"]
    # Nothing trained, nothing to export; --resume of the finished run changes nothing.
    exported = cli("export", run, "--out", tmp_path / "out")
    assert exported.code == 2 and "trained nothing" in exported.err and "Traceback" not in exported.err
    resumed = cli("train", recipe, "--output", run, "--resume")
    assert resumed.code == 0 and "nothing left to train" in resumed.err
    # A run written before a key was renamed stays usable: its recipe.yaml is read under the
    # new name, with a notice (a user's recipe with the old key is refused: test_recipe_bad_input).
    written = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(written.replace("fused_forward:", "fused_lora:"))
    old = cli("eval", run, "--json")
    assert old.code == 0, old.err
    assert "train.fused_lora is now train.fused_forward; read as such" in old.err
    assert json.loads(old.out)["accuracy"] == result["eval"]["accuracy"]


def test_the_old_form_is_refused_with_how_to_migrate(cli, write_recipe, tmp_path):
    """Before, a prompted recipe named a training method it never used (`lora  # not used`)."""
    old = write_recipe(_recipe(tmp_path, method="lora"))
    for verb in ("validate", "train", "eval"):
        res = cli(verb, old)
        assert res.code == 2, (verb, res.err)
        assert "method.name: eval.shots/eval.templates/eval.verbalizers score a causal LM" in res.err
        assert "write `method: {name: in-context}`" in res.err and "Traceback" not in res.err


def test_an_encoder_cannot_be_prompted(cli, write_recipe, tmp_path):
    recipe = _recipe(tmp_path)
    recipe["model"]["name"] = "tiny-bert"
    res = cli("train", write_recipe(recipe), "--output", tmp_path / "run")
    assert res.code == 2 and "is an encoder" in res.err and not (tmp_path / "run" / "final").exists()
