"""Manifest: each run records library versions, the git commit of the recipe's folder,
data fingerprint, tokenizer hash, seed and hardware; `--resume` warns, naming what
changed, when any of them differs from the run being continued."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
import yaml

from llmtune.train import manifest as run_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def _git(folder, *args):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def project(tmp_path):
    """A recipe and its data in a git repository."""
    from conftest import tiny_sst2

    repo = tmp_path / "project"
    repo.mkdir()
    data = tiny_sst2(repo, 16)
    (repo / "r.yaml").write_text(yaml.safe_dump({
        "model": {"name": "tiny-bert"}, "method": {"name": "full"},
        "data": {"task": "classification", "train": data.name, "eval_fraction": 0.25,
                 "columns": {"text": "sentence", "label": "label"}, "max_length": 16},
        "train": {"max_steps": 3, "batch_size": 4, "save_every": 1, "seed": 7},
    }))
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "recipe")
    return repo


def test_manifest_records_provenance(project, tmp_path, cli):
    out = tmp_path / "run"
    assert cli("train", project / "r.yaml", "--output", out).code == 0
    m = json.loads((out / "manifest.json").read_text())
    assert {"python", "torch", "transformers", "peft", "accelerate", "llmtune"} <= set(m["versions"])
    assert m["recipe_git_sha"] == _git(project, "rev-parse", "HEAD") and m["recipe_git_dirty"] is False
    data_sha = hashlib.sha256((project / "sst2_16.tsv").read_bytes()).hexdigest()
    assert m["data_fingerprint"]["train"] == data_sha
    assert len(m["tokenizer_hash"]) == 16 and m["seed"] == 7
    assert m["hardware"]["cpus"] >= 1 and "platform" in m["hardware"] and m["hardware"]["cuda"] is False
    assert m["steps"] == 3 and m["final_eval"]["accuracy"] >= 0


def test_resume_warns_about_each_change(project, tmp_path, cli, monkeypatch):
    out = tmp_path / "run"
    recipe = project / "r.yaml"
    assert cli("train", recipe, "--output", out, "--set", "train.max_steps=1").code == 0

    res = cli("train", recipe, "--output", out, "--resume", "--set", "train.max_steps=1")
    assert res.code == 0 and "warning: resuming" not in res.err  # nothing changed, nothing said
    assert "nothing left to train, nothing written" in res.err  # the finished run is left as it was

    # Edit the data (uncommitted), change the seed, and pretend torch was upgraded.
    with open(project / "sst2_16.tsv", "a") as fh:
        fh.write("an extra row\t1\n")
    real_versions = run_dir._versions
    monkeypatch.setattr(run_dir, "_versions", lambda: {**real_versions(), "torch": "99.0"})
    res = cli("train", recipe, "--output", out, "--resume", "--set", "train.max_steps=2", "--set", "train.seed=8")
    assert res.code == 0, res.err
    warnings = [line for line in res.err.splitlines() if "warning: resuming, but" in line]
    said = "\n".join(warnings)
    assert "the data (file contents, data settings or tokenizer) changed" in said
    assert "train.seed changed since the run started (seed: 7 -> 8)" in said
    assert "library versions changed" in said and "torch: " in said and "-> '99.0'" in said
    assert "the recipe changed" in said
    assert "tokenizer changed" not in said  # the same tokenizer: not reported as changed
    m = json.loads((out / "manifest.json").read_text())
    assert m["recipe_git_dirty"] is True and len(m["resumes"]) == 1  # the no-op resume above wrote nothing


def test_manifest_changes_lists_only_differences():
    old = {"versions": {"torch": "1", "peft": "2"}, "seed": 1, "tokenizer_hash": "a", "hardware": {"cpus": 2}}
    new = {"versions": {"torch": "1", "peft": "3"}, "seed": 1, "tokenizer_hash": "b", "hardware": {"cpus": 2}}
    changes = run_dir.manifest_changes(old, new)
    assert len(changes) == 2
    assert "peft: '2' -> '3'" in changes[0] and "torch" not in changes[0]
    assert "the tokenizer changed" in changes[1]
    assert "without a readable manifest.json" in run_dir.manifest_changes(None, new)[0]
