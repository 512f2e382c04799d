"""`llmtune report RUN_DIR`: headless PNGs of loss, lr and eval metrics against step, and a
markdown summary of the run's costs and scores, all from its manifest, recipe and metrics."""

from __future__ import annotations

import json

from run_fixtures import make_run, png_size

from llmtune.report.plots import HEIGHT, WIDTH


def test_report_writes_plots_and_summary(cli, tmp_path):
    run = make_run(tmp_path, "lora-seed0", accuracy=0.84, trainable=676_610, total=23_389_378, peak=1960,
                   method_options={"r": 16, "alpha": 32})
    (run / "eval.json").write_text(json.dumps({"accuracy": 0.84, "per_class": {
        "negative": {"precision": 0.86, "recall": 0.81, "f1": 0.83, "support": 428},
        "positive": {"precision": 0.82, "recall": 0.87, "f1": 0.85, "support": 444}}}))
    res = cli("report", run, "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    folder = run / "report"
    assert doc["files"] == {"markdown": str(folder / "report.md"), "loss": str(folder / "loss.png"),
                            "lr": str(folder / "lr.png"), "eval": str(folder / "eval.png")}
    for name in ("loss", "lr", "eval"):
        assert png_size(folder / f"{name}.png") == (WIDTH, HEIGHT)
        assert (folder / f"{name}.png").stat().st_size > 5_000
    assert doc["trainable_parameters"] == 676_610 and doc["status"] == "finished"
    assert doc["recipe"]["method.r"] == 16 and doc["recipe"]["train.lr"] == 1e-3
    assert doc["per_class"]["positive"]["support"] == 444 and doc["missing_manifest_keys"] == []
    md = (folder / "report.md").read_text()
    for text in ("## Recipe", "| method.alpha | 32 |", "676,610 of 23,389,378 (2.89%)", "| peak memory | 1,960 MB |",
                 "| train time | 10.0 s |", "| accuracy | 0.8400 (84.0%) |", "| positive | 0.8200 | 0.8700 |",
                 "![loss](loss.png)", "![eval](eval.png)"):
        assert text in md, text


def test_report_of_an_old_or_failed_run_says_what_it_lacks(cli, tmp_path):
    run = make_run(tmp_path, "old", status="diverged", accuracy=None, error="training diverged: nan at step 3",
                   drop=("artifact_bytes", "peak_memory_mb"), metrics=[{"step": 1, "loss": 2.0, "lr": 1e-3}])
    out = tmp_path / "elsewhere"
    res = cli("report", run, "--out", out)
    assert res.code == 0, res.err
    md = (out / "report.md").read_text()
    assert "status **diverged**" in md and "training diverged: nan at step 3" in md
    assert "| peak memory | ? |" in md and "peak_memory_mb, artifact_bytes" in md
    assert (out / "loss.png").exists() and not (out / "eval.png").exists()  # no eval records, no eval plot
    assert "Run report: old" in res.out


def test_report_of_a_missing_or_foreign_folder_exits_2(cli, tmp_path):
    res = cli("report", tmp_path / "nowhere")
    assert res.code == 2 and f"{tmp_path / 'nowhere'}: no such run directory" in res.err
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "recipe.yaml").write_text("model: {name: x}\n")
    res = cli("report", tmp_path / "stub")
    assert res.code == 2 and "stopped before training began" in res.err
    assert f"{tmp_path / 'stub'}: not a run llmtune can report on" in res.err


def test_report_of_a_folder_that_is_not_a_run_says_report_and_what_a_run_holds(cli, tmp_path):
    """`llmtune report NOT_A_RUN` said "not a run llmtune can compare": the verb of
    another command, and no word of what a run directory holds."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("mine")
    res = cli("report", folder)
    assert res.code == 2, res.err
    assert f"{folder}: not a run llmtune can report on (no manifest.json, which `llmtune train` writes" in res.err
    assert "metrics.jsonl" in res.err and "runs/<recipe name>" in res.err
    assert "compare" not in res.err and "Traceback" not in res.err
    a_file = tmp_path / "run.txt"
    a_file.write_text("x")
    res = cli("report", a_file)
    assert res.code == 2 and f"{a_file}: not a directory; pass a run directory" in res.err
