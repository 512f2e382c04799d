"""train.report_to: the metrics.jsonl records and the resolved recipe reach TensorBoard (read
back from the event files) and Weights & Biases (offline run file read back); a missing
package stops the run before anything is written, with the install command."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from conftest import DATA

pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(write_recipe, report_to):
    return write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "sft", "train": str(DATA / "alpaca_tiny.json"), "eval_fraction": 0.1, "max_length": 48},
        "method": {"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
        "train": {"max_steps": 3, "batch_size": 4, "log_every": 1, "lr": 1e-3, "report_to": report_to},
        "eval": {"generate": False},
    })


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _wandb_records(path: Path):
    """Records of an offline W&B run file: a 7-byte header, then LevelDB-log-style 32 KiB
    blocks of (crc32, length, type) chunks, each record a wandb protobuf Record."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def test_tensorboard_and_wandb_get_every_metrics_record(cli, write_recipe, tmp_path, monkeypatch):
    for var, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": tmp_path / "wb-config",
                       "WANDB_CACHE_DIR": tmp_path / "wb-cache", "WANDB_DATA_DIR": tmp_path / "wb-data"}.items():
        monkeypatch.setenv(var, str(value))
    run = tmp_path / "run"
    res = cli("train", _recipe(write_recipe, ["tensorboard", "wandb"]), "--output", run)
    assert res.code == 0, res.err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = {}
    for rec in records:
        for key, value in rec.items():
            if key != "step":
                expected.setdefault(key, []).append((rec["step"], value))
    assert {"loss", "lr", "eval_loss"} <= set(expected)

    scalars = _tensorboard_scalars(run / "tracking" / "run")
    assert set(scalars) == set(expected)
    for tag, points in expected.items():
        assert [s for s, _ in scalars[tag]] == [s for s, _ in points], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag
    hparams = next((run / "tracking" / "run").glob("*/hparams.yml")).read_text()
    assert "train.lr: 0.001" in hparams and "method.name: lora" in hparams

    [run_file] = (run / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = [], {}
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    logged = {}
    for row in history:
        for key, value in row.items():
            if not key.startswith("_"):
                logged.setdefault(key, []).append((row["_step"], value))
    for tag, points in expected.items():
        assert logged[tag] == [(s, pytest.approx(v, rel=1e-9)) for s, v in points], tag
    assert config["train.lr"] == 0.001 and config["data.task"] == "sft"


def test_missing_tracker_package_stops_before_anything_is_written(cli, write_recipe, tmp_path, monkeypatch):
    from llmtune.train import tracking

    real = tracking.find_spec
    monkeypatch.setattr(tracking, "find_spec", lambda name: None if name == "mlflow" else real(name))
    res = cli("train", _recipe(write_recipe, ["tensorboard", "mlflow"]), "--output", tmp_path / "run")
    assert res.code == 2
    assert "train.report_to lists mlflow" in res.err and "`pip install mlflow`" in res.err
    assert not (tmp_path / "run").exists()


def test_every_trainer_reaches_the_trackers_through_log_metrics(tmp_path):
    from llmtune.train.run_dir import RunDir
    from llmtune.train.tracking import Trackers

    class Fake:
        def __init__(self):
            self.seen = []

        def log(self, values, step=None):
            self.seen.append((step, values))

    fake = Fake()
    run = RunDir(tmp_path, tracker=Trackers([fake]))
    run.log_metrics({"step": 4, "loss": 1.5, "rewards/accuracies": 0.75, "note": "text", "flag": True})
    assert fake.seen == [(4, {"loss": 1.5, "rewards/accuracies": 0.75})]
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["note"] == "text"
