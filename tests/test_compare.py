"""`llmtune compare` over run directories written directly (no training): rows, mean ± std
over seeds, the hyperparameters that differ, Pareto flags, baseline differences, the refusal
of runs evaluated differently or not finished, failed runs as rows, and the outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from run_fixtures import SST2_IDENTITY, make_run, png_size

from llmtune.report.plots import HEIGHT, WIDTH


def compare_json(cli, *args):
    res = cli("compare", *map(str, args), "--json")
    assert res.code == 0, res.err
    return json.loads(res.out)


def by_name(doc):
    return {row["name"]: row for row in doc["rows"]}


def test_seeds_aggregate_into_one_row_with_mean_and_std(cli, tmp_path):
    runs = [make_run(tmp_path, f"lora-seed{s}", seed=s, accuracy=a, method_options={"r": 16})
            for s, a in enumerate((0.80, 0.82, 0.84))]
    runs += [make_run(tmp_path, f"full-seed{s}", method="full", seed=s, accuracy=a, lr=1e-4, trainable=100_000)
             for s, a in enumerate((0.85, 0.86, 0.87))]
    runs.append(make_run(tmp_path, "frozen", method="frozen-head", accuracy=0.7, lr=3e-2, trainable=10))
    doc = compare_json(cli, *runs, "--out", tmp_path / "out")
    rows = by_name(doc)
    assert list(rows) == ["lora", "full", "frozen"]
    lora = rows["lora"]
    assert lora["n"] == 3 and lora["seeds"] == [0, 1, 2] and lora["method"] == "lora"
    assert lora["metric"]["mean"] == pytest.approx(0.82) and lora["metric"]["std"] == pytest.approx(0.02)
    assert lora["secondary"]["macro_f1"]["mean"] == pytest.approx(0.81)
    assert rows["frozen"]["metric"]["std"] is None  # one seed: no spread
    assert doc["metric"] == "accuracy" and doc["higher_is_better"] is True
    # Only what differs between rows (the lr; not the seed, not the data), and each method's
    # options that are not its defaults (LoRA's default rank is 8).
    assert doc["hyperparameters"] == ["train.lr"]
    assert lora["hyperparameters"] == {"train.lr": 1e-3} and lora["options"] == {"r": 16}
    assert rows["full"]["hyperparameters"] == {"train.lr": 1e-4} and rows["full"]["options"] == {}
    assert rows["full"]["trainable_parameters"] == 100_000 and rows["full"]["trainable_percent"] == 100.0


def test_pareto_flags_metric_against_params_time_and_memory(cli, tmp_path):
    runs = [make_run(tmp_path, "big", accuracy=0.86, trainable=1_000_000, train_seconds=50, peak=1500),
            make_run(tmp_path, "small", accuracy=0.82, trainable=1_000, train_seconds=10, peak=500),
            make_run(tmp_path, "dominated", accuracy=0.80, trainable=10_000, train_seconds=20, peak=800),
            make_run(tmp_path, "fast", accuracy=0.81, trainable=100_000, train_seconds=5, peak=2000)]
    rows = by_name(compare_json(cli, *runs, "--out", tmp_path / "out"))
    assert rows["big"]["pareto"] == ["params", "time", "memory"]
    assert rows["small"]["pareto"] == ["params", "time", "memory"]
    assert rows["dominated"]["pareto"] == []
    assert rows["fast"]["pareto"] == ["time"]


def test_baseline_difference_and_noise(cli, tmp_path):
    runs = [make_run(tmp_path, f"full-seed{s}", method="full", seed=s, accuracy=a) for s, a in
            enumerate((0.85, 0.86, 0.87))]
    runs += [make_run(tmp_path, f"lora-seed{s}", seed=s, accuracy=a) for s, a in enumerate((0.80, 0.82, 0.84))]
    runs += [make_run(tmp_path, f"ia3-seed{s}", method="ia3", seed=s, accuracy=a) for s, a in
             enumerate((0.85, 0.855, 0.86))]
    doc = compare_json(cli, *runs, "--baseline", "full", "--out", tmp_path / "out")
    rows = by_name(doc)
    assert doc["baseline"] == "full" and rows["full"]["delta"] is None
    assert rows["lora"]["delta"]["value"] == pytest.approx(-0.04)
    assert rows["lora"]["delta"]["spread"] == pytest.approx((0.02 ** 2 + 0.01 ** 2) ** 0.5)
    assert rows["lora"]["delta"]["noise"] is False
    assert rows["ia3"]["delta"]["noise"] is True  # 0.5 points apart, within the seeds' spread
    res = cli("compare", *runs, "--baseline", "nope", "--out", tmp_path / "out")
    assert res.code == 2 and "--baseline nope" in res.err and "full" in res.err


def test_mismatched_eval_sets_exit_2_naming_runs_and_difference(cli, tmp_path):
    a = make_run(tmp_path, "sst2-lora")
    b = make_run(tmp_path, "agnews-lora", identity={**SST2_IDENTITY, "fingerprint": "ffff0000ffff0000",
                                                     "rows": 7600, "labels": ["World", "Sports"]})
    res = cli("compare", a, b, "--out", tmp_path / "out")
    assert res.code == 2
    assert "not evaluated alike" in res.err and "--force" in res.err
    assert str(a) in res.err and str(b) in res.err
    for what in ("the eval rows (fingerprint)", "the number of rows scored", "the label set"):
        assert what in res.err
    assert "primary metric" not in res.err  # the metric is the same

    doc = compare_json(cli, a, b, "--force", "--out", tmp_path / "out")
    assert doc["forced"] and doc["mixed_eval"]
    assert {row["eval_set"] for row in doc["rows"]} == {"A", "B"}
    assert "WARNING (--force)" in (tmp_path / "out" / "table.md").read_text()


def test_other_metric_or_missing_identity_is_refused(cli, tmp_path):
    a = make_run(tmp_path, "a")
    b = make_run(tmp_path, "b", identity={**SST2_IDENTITY, "metric": "loss"})
    res = cli("compare", a, b)
    assert res.code == 2 and "the primary metric" in res.err
    c = make_run(tmp_path, "old", drop=("eval_identity",))
    res = cli("compare", a, c)
    assert res.code == 2 and f"{c}: its manifest has no complete eval_identity" in res.err


def test_half_finished_or_missing_run_exit_2_naming_it(cli, tmp_path):
    done = make_run(tmp_path, "done")
    half = make_run(tmp_path, "half", status="running", accuracy=None, final=False)
    res = cli("compare", done, half)
    assert res.code == 2 and f"{half}: not finished (status running)" in res.err and "--resume" in res.err
    legacy = make_run(tmp_path, "legacy", final=False, drop=("status",))
    res = cli("compare", done, legacy)
    assert res.code == 2 and f"{legacy}: not finished (no final/ folder and no status" in res.err

    res = cli("compare", done, tmp_path / "nowhere")
    assert res.code == 2 and f"{tmp_path / 'nowhere'}: no such run directory" in res.err
    (tmp_path / "empty").mkdir()
    res = cli("compare", done, tmp_path / "empty")
    assert res.code == 2 and f"{tmp_path / 'empty'}: not a run llmtune can compare (no manifest.json" in res.err

    rows = by_name(compare_json(cli, done, half, "--force", "--out", tmp_path / "out"))
    assert rows["half"]["status"] == "running" and rows["half"]["ranked"] is False


def test_one_run_given_twice_is_refused_not_counted_as_two_seeds(cli, tmp_path):
    """`compare runs/lora-seed0 runs/lora-seed*` (or `run run/`, or a symlink) used to make the
    run two seeds of its row: "seeds 0,0" and a std of 0.0 that no second seed measured."""
    a, b = make_run(tmp_path, "lora-seed0", seed=0, accuracy=0.8), make_run(tmp_path, "lora-seed1", seed=1)
    (tmp_path / "link").symlink_to(a)
    for twice in (a, f"{a}/", tmp_path / "link"):
        res = cli("compare", a, b, twice, "--out", tmp_path / "out")
        assert res.code == 2, res.err
        assert f"{Path(twice)}: the same run as {a}, given twice; pass each run directory once" in res.err
        assert "Traceback" not in res.err
    assert by_name(compare_json(cli, a, b, "--out", tmp_path / "out"))["lora"]["seeds"] == [0, 1]


def test_failed_and_diverged_runs_stay_as_rows_with_their_error(cli, tmp_path):
    ok = make_run(tmp_path, "ok")
    bad = make_run(tmp_path, "bad", status="failed", accuracy=None, final=False,
                   error="data/x.tsv:3: label 'maybe' is not one of negative, positive")
    nan = make_run(tmp_path, "nan", method="full", status="diverged", accuracy=None, final=False,
                   error="training diverged: non-finite loss nan at step 5")
    doc = compare_json(cli, ok, bad, nan, "--out", tmp_path / "out")
    rows = by_name(doc)
    assert rows["bad"]["status"] == "failed" and "label 'maybe'" in rows["bad"]["error"]
    assert rows["nan"]["status"] == "diverged" and rows["nan"]["error"].startswith("training diverged")
    assert not rows["bad"]["ranked"] and rows["bad"]["pareto"] == [] and rows["bad"]["metric"]["mean"] is None
    assert rows["ok"]["pareto"] == ["params", "time", "memory"]  # alone among the finished
    res = cli("compare", ok, bad, nan, "--out", tmp_path / "out")
    assert res.code == 0 and "diverged: training diverged" in res.out


def test_keys_an_old_run_lacks_show_as_unknown(cli, tmp_path):
    a = make_run(tmp_path, "a", accuracy=0.9, peak=100)
    b = make_run(tmp_path, "b", accuracy=0.8, drop=("peak_memory_mb", "artifact_bytes", "tokens_per_second"))
    rows = by_name(compare_json(cli, a, b, "--out", tmp_path / "out"))
    assert rows["b"]["peak_memory_mb"]["mean"] is None and rows["b"]["artifact_bytes"]["mean"] is None
    assert "memory" not in rows["b"]["pareto"]  # unknown cost: never on that front
    md = (tmp_path / "out" / "table.md").read_text()
    b_line = next(line for line in md.splitlines() if line.startswith("| b |"))
    assert b_line.count(" ? ") >= 3


def test_outputs_markdown_csv_json_and_plots(cli, tmp_path):
    runs = [make_run(tmp_path, f"lora-seed{s}", seed=s, accuracy=0.8 + s / 100) for s in range(2)]
    runs.append(make_run(tmp_path, "full", method="full", accuracy=0.85, trainable=100_000, peak=900))
    runs.append(make_run(tmp_path, "broken", status="failed", accuracy=None, final=False, error="boom"))
    out = tmp_path / "out"
    doc = compare_json(cli, *runs, "--out", out)
    assert set(doc["files"]) == {"markdown", "csv", "json", "metric_vs_params", "metric_vs_time", "peak_memory",
                                 "learning_curves"}
    for name in ("metric_vs_params", "metric_vs_time", "peak_memory", "learning_curves"):
        path = out / f"{name}.png"
        assert doc["files"][name] == str(path) and path.stat().st_size > 5_000
        assert png_size(path) == (WIDTH, HEIGHT)
    assert json.loads((out / "table.json").read_text())["rows"] == doc["rows"]
    with open(out / "table.csv") as fh:
        lines = list(csv.DictReader(fh))
    assert [line["name"] for line in lines] == ["lora", "full", "broken"]
    assert float(lines[0]["accuracy_mean"]) == pytest.approx(0.805) and lines[2]["error"] == "boom"
    md = (out / "table.md").read_text()
    assert "| lora | lora |" in md and "80.5 ± 0.7" in md and "failed: boom" in md


def test_terminal_table_and_recipe_flags(cli, tmp_path, write_recipe):
    run = make_run(tmp_path, "one", accuracy=0.75)
    res = cli("compare", run, "--out", tmp_path / "out")
    assert res.code == 0 and "one" in res.out and "75.0" in res.out
    res = cli("compare", write_recipe({"model": {"name": "x"}}), "--out", tmp_path / "out")
    assert res.code == 2 and "pass --recipes" in res.err
    res = cli("compare", run, "--seeds", "0,1")
    assert res.code == 2 and "--recipes only" in res.err
    res = cli("compare", "--recipes", write_recipe({"model": {"name": "x"}}), "--seeds", "0,x")
    assert res.code == 2 and "--seeds '0,x'" in res.err


def test_manifest_fields_list():
    from llmtune.report.fields import manifest_fields_for_compare, missing_fields

    keys = manifest_fields_for_compare()
    assert {"status", "error", "trainable_parameters", "eval_identity", "final_eval", "artifact_bytes"} <= set(keys)
    full = {k: None for k in keys} | {"status": "finished", "eval_identity": dict(SST2_IDENTITY)}
    assert missing_fields(full) == []
    del full["error"]
    assert missing_fields(full) == []  # a finished run needs no error
    assert missing_fields({"status": "failed", "eval_identity": {"rows": 3}}) == [
        k for k in keys if k not in ("status", "eval_identity")] + [
        "eval_identity.fingerprint", "eval_identity.labels", "eval_identity.metric"]


def test_which_hyperparameters_count_as_differing():
    from llmtune.report.recipe_diff import differing_keys, hyperparameters, method_options

    # A key only some rows have (a prompting option) differs only if those rows differ.
    assert differing_keys([{"a": 1, "b": 2}, {"a": 1, "b": 3}, {"c": 5}]) == ["b"]
    assert differing_keys([{"a": 1, "c": 5}, {"a": 1}, {"c": 5}]) == []
    # A method's options are shown only where they leave its defaults (16 == 16.0).
    assert method_options({"method": {"name": "lora", "r": 8, "alpha": 16.0}}, False) == {}
    assert method_options({"method": {"name": "lora", "r": 4, "dora": True}}, False) == {"r": 4, "dora": True}
    assert method_options({"method": {"name": "no-such-method", "k": 1}}, False) == {"k": 1}
    # A prompted evaluation uses no train or method keys; a trained classifier no prompting keys.
    recipe = {"train": {"lr": 1e-3, "seed": 3}, "method": {"name": "lora"}, "eval": {"shots": 4, "limit": 9}}
    assert hyperparameters(recipe, in_context=True) == {"eval.shots": 4, "eval.limit": 9}
    assert hyperparameters(recipe, in_context=False) == {"train.lr": 1e-3, "eval.limit": 9}


def test_eval_identity_is_the_rows_content_not_the_model(write_recipe, tmp_path):
    from conftest import DATA

    from llmtune.recipe import load_recipe
    from llmtune.data.eval_identity import eval_identity

    data = {"task": "classification", "train": str(DATA / "sst2_train.tsv"), "eval": str(DATA / "sst2_dev.tsv"),
            "columns": {"text": "sentence"}, "labels": ["negative", "positive"]}
    trained = load_recipe(write_recipe({"model": {"name": "minilm"}, "data": data, "method": {"name": "lora"},
                                        "eval": {"limit": 50}}, "a.yaml"))
    prompted = load_recipe(write_recipe({"model": {"name": "tiny-llama"}, "data": {**data, "max_length": 512},
                                         "method": {"name": "in-context"}, "eval": {"limit": 50, "shots": 4}}, "b.yaml"))
    a, b = eval_identity(trained.recipe), eval_identity(prompted.recipe)
    assert a == b and a["rows"] == 50 and a["labels"] == ["negative", "positive"] and a["metric"] == "accuracy"
    assert eval_identity(trained.recipe, limit=40)["fingerprint"] != a["fingerprint"]
    held_out = load_recipe(write_recipe({"model": {"name": "minilm"}, "method": {"name": "lora"},
                                         "data": {**data, "eval": None, "eval_fraction": 0.001}}, "c.yaml"))
    assert eval_identity(held_out.recipe)["rows"] == 16  # 0.1% of the 16,000 training rows
