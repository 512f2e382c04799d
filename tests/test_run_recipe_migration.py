"""A finished run stays usable after a recipe key is renamed: its own recipe.yaml (which llmtune
wrote) is read under the new names with a one-line notice, for eval, export, --resume, a later
stage's model.name and compare; a recipe the user writes with the old key is still refused
(exit 2, 'renamed', with what to write)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
NOTICE = "train.fused_lora is now train.fused_forward; read as such"


def _recipe(**train) -> dict:
    return {"model": {"name": "tiny-llama"},
            "data": {"task": "sft", "train": {"path": str(ROOT / "recipes/data/alpaca_tiny.json"), "limit": 16},
                     "max_length": 64},
            "method": {"name": "lora", "r": 4},
            "train": {"max_steps": 2, "batch_size": 4, **train}}


def test_a_run_recorded_with_a_renamed_key_opens_for_every_verb(cli, write_recipe, tmp_path):
    recipe = write_recipe(_recipe())
    run = tmp_path / "run"
    assert cli("train", recipe, "--output", run).code == 0
    written = (run / "recipe.yaml").read_text()
    assert "fused_forward:" in written
    shutil.copytree(run, tmp_path / "same-run-today")  # the same run, its recipe as written now
    (run / "recipe.yaml").write_text(written.replace("fused_forward:", "fused_lora:"))  # as written before the rename

    evaluated = cli("eval", run, "--json")
    assert evaluated.code == 0, evaluated.err
    assert NOTICE in evaluated.err and "loss" in json.loads(evaluated.out)
    exported = cli("export", run, "--merge", "--out", tmp_path / "exported")
    assert exported.code == 0, exported.err
    assert NOTICE in exported.err and (tmp_path / "exported" / "config.json").exists()
    resumed = cli("train", recipe, "--output", run, "--resume")
    assert resumed.code == 0 and "nothing left to train" in resumed.err, resumed.err
    later_stage = write_recipe({**_recipe(), "model": {"name": str(run)}}, "stage2.yaml")
    assert cli("validate", later_stage).code == 0
    # compare reads the renamed key under its new name: no recipe key differs between the two.
    compared = cli("compare", run, tmp_path / "same-run-today", "--json", "--out", tmp_path / "compare")
    assert compared.code == 0, compared.err
    table = json.loads(compared.out)
    assert not {"train.fused_lora", "train.fused_forward"} & set(table["hyperparameters"]), table["hyperparameters"]

    # The user's own recipe with the old key: refused, saying how to write it now.
    old_form = write_recipe(_recipe(fused_lora=False), "old.yaml")
    refused = cli("validate", old_form)
    assert refused.code == 2 and "renamed: write `train.fused_forward: false`" in refused.err
    assert "Traceback" not in refused.err
