"""compare and report over real tiny runs: two finished `llmtune train` runs, and
`compare --recipes` running recipes x seeds in process (a trained recipe, an in-context
one, a broken one, a diverging one), reusing finished runs and resuming a stopped one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import DATA, tiny_sst2
from run_fixtures import png_size

from llmtune.report.plots import HEIGHT, WIDTH

pytestmark = pytest.mark.usefixtures("one_thread")


def _classifier(tmp_path, method: str, **extra) -> dict:
    eval_rows = tmp_path / "dev16.tsv"
    if not eval_rows.exists():
        eval_rows.write_text("\n".join((DATA / "sst2_dev.tsv").read_text().splitlines()[:17]) + "\n")
    return {"model": {"name": "tiny-bert"},
            "data": {"task": "classification", "train": str(tiny_sst2(tmp_path, 48)), "eval": str(eval_rows),
                     "columns": {"text": "sentence"}, "labels": ["negative", "positive"], "max_length": 24},
            "method": {"name": method}, "train": {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "log_every": 1},
            **extra}


def test_compare_two_finished_runs(cli, write_recipe, tmp_path):
    runs = {}
    for method in ("full", "frozen-head"):
        runs[method] = tmp_path / "runs" / method
        res = cli("train", write_recipe(_classifier(tmp_path, method), f"{method}.yaml"), "--output", runs[method])
        assert res.code == 0, res.err
    res = cli("compare", runs["full"], runs["frozen-head"], "--out", tmp_path / "cmp", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    rows = {row["name"]: row for row in doc["rows"]}
    assert list(rows) == ["full", "frozen-head"] and doc["metric"] == "accuracy"
    manifests = {m: json.loads((runs[m] / "manifest.json").read_text()) for m in runs}
    from llmtune.report.fields import missing_fields

    for m, manifest in manifests.items():  # the session writes every key compare reads
        assert missing_fields(manifest) == [], m
        assert manifest["eval_seconds"] > 0 and manifest["eval_identity"]["rows"] == 16
    for method, row in rows.items():
        assert row["method"] == method and row["status"] == "finished" and row["n"] == 1
        assert row["trainable_parameters"] == manifests[method]["trainable_parameters"]
        assert row["metric"]["mean"] == manifests[method]["final_eval"]["accuracy"]
    assert rows["frozen-head"]["trainable_parameters"] < rows["full"]["trainable_parameters"]
    # Fewest trainable parameters: always on that front; full only when it scores higher.
    assert "params" in rows["frozen-head"]["pareto"]
    full_wins = rows["full"]["metric"]["mean"] > rows["frozen-head"]["metric"]["mean"]
    assert ("params" in rows["full"]["pareto"]) == full_wins
    for name in ("metric_vs_params", "metric_vs_time", "peak_memory", "learning_curves"):
        assert png_size(tmp_path / "cmp" / f"{name}.png") == (WIDTH, HEIGHT)

    res = cli("report", runs["full"], "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["missing_manifest_keys"] == []
    assert png_size(runs["full"] / "report" / "loss.png") == (WIDTH, HEIGHT)


@pytest.fixture
def recorded_runs(monkeypatch):
    """Wrap run_recipe: record each call, and make the recipe named diverge.yaml diverge as a
    NaN loss would (test_divergence.py covers the loop's own handling; here only compare's is
    tested). The manifests are the session's own."""
    from llmtune.errors import TrainingDiverged
    from llmtune.train import session as run_module

    real, calls = run_module.run_recipe, []

    def wrapped(loaded, reporter, *, output=None, resume=False, overwrite=False, store_demos=None):
        calls.append((loaded.path.stem, loaded.recipe.train.seed, resume, overwrite))
        if loaded.path.stem == "diverge":
            raise TrainingDiverged("training diverged: non-finite loss nan at step 2")
        return real(loaded, reporter, output=output, resume=resume, overwrite=overwrite, store_demos=store_demos)

    monkeypatch.setattr(run_module, "run_recipe", wrapped)
    return calls


def test_compare_recipes_runs_reuses_and_keeps_failures(cli, write_recipe, tmp_path, recorded_runs):
    head = write_recipe(_classifier(tmp_path, "frozen-head", train={"max_steps": 2, "batch_size": 8,
                                                                      "lr": 1e-2, "save_every": 1}), "head.yaml")
    icl = _classifier(tmp_path, "in-context", eval={"shots": 2, "verbalizers": {"negative": "bad", "positive": "good"}})
    icl["model"] = {"name": "tiny-llama"}
    icl = write_recipe(icl, "icl.yaml")
    broken = _classifier(tmp_path, "full")
    broken["data"]["columns"]["label"] = "stars"  # no such column: fails in the run, exit 2 on its own
    broken = write_recipe(broken, "broken.yaml")
    diverge = write_recipe(_classifier(tmp_path, "full"), "diverge.yaml")
    typo = write_recipe({**_classifier(tmp_path, "full"), "trian": {}}, "typo.yaml")
    out = tmp_path / "cmp"
    args = ["compare", "--recipes", head, icl, broken, diverge, typo, "--seeds", "0,1", "--out", out, "--json"]

    res = cli(*args)
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    rows = [(row["name"], row["status"], row["seeds"]) for row in doc["rows"]]
    assert rows == [("head", "finished", [0, 1]), ("icl", "finished", [0, 1]),
                    ("broken", "failed", [0]), ("broken", "failed", [1]),
                    ("diverge", "diverged", [0]), ("diverge", "diverged", [1]),
                    ("typo", "failed", [0]), ("typo", "failed", [1])]
    by = {row["name"]: row for row in doc["rows"]}
    assert "stars" in by["broken"]["error"] and "non-finite loss" in by["diverge"]["error"]
    assert "trian" in by["typo"]["error"]  # a recipe error: a row, never run
    assert by["icl"]["method"] == "in-context" and by["icl"]["trainable_parameters"] == 0
    assert by["icl"]["seconds_per_query"]["mean"] > 0 and by["head"]["n"] == 2
    assert by["head"]["pareto"] and doc["baseline"] == "head"
    # Run directories: OUT/runs/<stem>-seed<N>; the in-context one written by the same session
    # as every run (compare writes none), seeded through eval.seed too.
    icl_dir = out / "runs" / "icl-seed1"
    manifest = json.loads((icl_dir / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["status"] == "finished" and manifest["steps"] == 0
    assert manifest["prompting"]["shots"] == 2 and manifest["eval_identity"]["metric"] == "accuracy"
    assert json.loads((icl_dir / "final" / "llmtune.json").read_text())["method"] == "in-context"
    assert yaml.safe_load((icl_dir / "recipe.yaml").read_text())["eval"]["seed"] == 1
    head_hash = json.loads((out / "runs" / "head-seed0" / "manifest.json").read_text())["recipe_hash"]
    trained = [c for c in recorded_runs if c[0] == "head"]
    assert trained == [("head", 0, False, False), ("head", 1, False, False)]
    assert [c for c in recorded_runs if c[0] == "icl"] == [("icl", 0, False, False), ("icl", 1, False, False)]

    # Again: finished runs are reused; a run marked stopped is resumed; failures run again.
    m1 = out / "runs" / "head-seed1" / "manifest.json"
    m1.write_text(json.dumps({**json.loads(m1.read_text()), "status": "stopped"}))
    recorded_runs.clear()
    res = cli(*args)
    assert res.code == 0, res.err
    assert [c for c in recorded_runs if c[0] == "head"] == [("head", 1, True, False)]
    assert [c[:2] for c in recorded_runs if c[0] == "diverge"] == [("diverge", 0), ("diverge", 1)]
    assert json.loads((out / "runs" / "head-seed0" / "manifest.json").read_text())["recipe_hash"] == head_hash
    assert "finished earlier with the same recipe" in res.err


def test_compare_recipes_refuses_bad_command_lines_before_running(cli, write_recipe, tmp_path, recorded_runs):
    head = write_recipe(_classifier(tmp_path, "frozen-head"), "head.yaml")
    (tmp_path / "other").mkdir()
    twin = write_recipe(_classifier(tmp_path, "full"), "other/head.yaml")
    res = cli("compare", "--recipes", head, twin, "--out", tmp_path / "cmp")
    assert res.code == 2 and "two recipes named 'head'" in res.err
    res = cli("compare", "--recipes", head, tmp_path / "missing.yaml")
    assert res.code == 2 and "missing.yaml: no such recipe file" in res.err
    res = cli("compare", "--recipes", head, "--baseline", "haed", "--out", tmp_path / "cmp")
    assert res.code == 2 and "--baseline haed" in res.err
    assert recorded_runs == []
