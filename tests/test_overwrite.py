"""Nothing overwritten by accident: an existing run (or any non-empty folder) is refused
(exit 2) unless --resume or --overwrite says what to do; --overwrite only ever deletes
an llmtune run directory."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture
def recipe(tmp_path, write_recipe):
    from conftest import tiny_sst2

    return write_recipe({
        "model": {"name": "tiny-bert"},
        "data": {"task": "classification", "train": str(tiny_sst2(tmp_path, 16)), "eval_fraction": 0.25,
                 "columns": {"text": "sentence", "label": "label"}, "max_length": 16},
        "method": {"name": "lora", "target_modules": ["query", "value"]},
        "train": {"max_steps": 2, "batch_size": 4, "save_every": 1},
    })


def test_existing_run_is_refused_then_overwrite_and_resume_work(recipe, tmp_path, cli):
    out = tmp_path / "run"
    assert cli("train", recipe, "--output", out).code == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    res = cli("train", recipe, "--output", out)
    assert res.code == 2
    assert f"{out}: the output directory already holds a run" in res.err
    assert "--resume" in res.err and "--overwrite" in res.err and "Traceback" not in res.err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    (out / "notes.txt").write_text("mine")
    res = cli("train", recipe, "--output", out, "--overwrite")
    assert res.code == 0, res.err
    assert not (out / "notes.txt").exists()  # replaced, not merged
    assert json.loads((out / "manifest.json").read_text())["steps"] == 2

    res = cli("train", recipe, "--output", out, "--resume", "--set", "train.max_steps=3")
    assert res.code == 0, res.err
    assert "resumed from step-2" in res.err
    assert "warning: resuming, but the recipe changed" in res.err
    assert json.loads((out / "manifest.json").read_text())["steps"] == 3


def test_flag_mistakes_exit_2(recipe, tmp_path, cli):
    res = cli("train", recipe, "--output", tmp_path / "nothing", "--resume")
    assert res.code == 2 and "there is no run to resume" in res.err
    res = cli("train", recipe, "--output", tmp_path / "x", "--resume", "--overwrite")
    assert res.code == 2 and "contradict" in res.err


def test_overwrite_never_deletes_a_folder_llmtune_did_not_write(recipe, tmp_path, cli):
    mine = tmp_path / "important"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    for flags in ([], ["--overwrite"], ["--resume"]):
        res = cli("train", recipe, "--output", mine, *flags)
        assert res.code == 2, flags
        assert "not" in res.err and str(mine) in res.err and "Traceback" not in res.err
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    res = cli("train", recipe, "--output", a_file)
    assert res.code == 2 and "is a file, not a directory" in res.err


def test_a_run_that_failed_before_training_can_be_rerun(recipe, tmp_path, cli, write_recipe):
    """Bad data stops a run before anything is trained; fixing the data and running the
    same command again must not need --overwrite."""
    import yaml

    out = tmp_path / "run"
    broken = yaml.safe_load(recipe.read_text())
    broken["data"]["columns"]["text"] = "no_such_column"
    res = cli("train", write_recipe(broken, "broken.yaml"), "--output", out)
    assert res.code == 2 and "no column 'no_such_column'" in res.err
    assert sorted(p.name for p in out.iterdir()) == ["recipe.yaml"]
    assert cli("train", recipe, "--output", out).code == 0


def test_resume_of_a_finished_run_without_checkpoints_is_refused(recipe, tmp_path, cli):
    """A finished run that kept no checkpoint has nothing to continue from: --resume used to
    start again from step 0 and replace final/ and the metrics; it must say --overwrite."""
    out = tmp_path / "run"
    assert cli("train", recipe, "--output", out, "--set", "train.save_every=100").code == 0
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    res = cli("train", recipe, "--output", out, "--resume", "--set", "train.lr=0.5")
    assert res.code == 2, res.err
    assert f"--resume: {out} holds a finished run" in res.err and "--overwrite" in res.err
    assert "Traceback" not in res.err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_resume_of_a_finished_run_whose_last_checkpoint_is_before_the_end_changes_nothing(recipe, tmp_path, cli):
    """save_every 3 over 4 steps leaves step-3 as the last checkpoint: --resume of the finished
    run used to train step 4 again and rewrite final/ and the metrics. The same recipe finds
    the run complete (exit 0, every byte kept); a changed one that asks for no more steps is
    refused as a finished run without checkpoints is; more steps still continue from step-3."""
    out = tmp_path / "run"
    every3 = ["--set", "train.save_every=3", "--set", "train.max_steps=4"]
    assert cli("train", recipe, "--output", out, *every3).code == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3"]
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    res = cli("train", recipe, "--output", out, "--resume", *every3, "--json")
    assert res.code == 0, res.err
    assert f"--resume: {out} holds a finished run (4 steps) of this recipe; nothing left to train" in res.err
    assert "resumed from" not in res.err
    result = json.loads(res.out)
    assert result["steps"] == 4 and result["already_finished"] is True
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    for changed in (["--set", "train.lr=0.5"], ["--set", "train.max_steps=3"]):
        res = cli("train", recipe, "--output", out, "--resume", "--set", "train.save_every=3", *changed)
        assert res.code == 2, res.err
        assert f"--resume: {out} holds a finished run (4 steps) and this recipe asks for no more steps" in res.err
        assert "--overwrite" in res.err and "Traceback" not in res.err
        assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    res = cli("train", recipe, "--output", out, "--resume", "--set", "train.save_every=3",
              "--set", "train.max_steps=5")
    assert res.code == 0, res.err
    assert "resumed from step-3" in res.err
    assert json.loads((out / "manifest.json").read_text())["steps"] == 5
