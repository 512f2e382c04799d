"""Run directories written directly (no training), with every manifest key compare reads,
for fast tests of `llmtune compare` and `llmtune report`."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

SST2_IDENTITY = {"fingerprint": "aaaa1111bbbb2222", "rows": 872, "labels": ["negative", "positive"],
                 "metric": "accuracy"}


def make_run(root: Path, name: str, *, method: str = "lora", seed: int = 0, accuracy: float | None = 0.8,
             trainable: int = 1000, total: int = 100_000, train_seconds: float = 10.0, peak: float = 500.0,
             status: str = "finished", error: str | None = None, identity: dict | None = None,
             method_options: dict | None = None, lr: float = 1e-3, metrics: list[dict] | None = None,
             final: bool = True, drop: tuple[str, ...] = ()) -> Path:
    run = root / name
    run.mkdir(parents=True)
    recipe = {"model": {"name": "minilm", "pooling": "mean"},
              "data": {"task": "classification", "train": {"path": "/data/sst2_train.tsv", "limit": None},
                       "eval": {"path": "/data/sst2_dev.tsv", "limit": None}, "max_length": 64},
              "method": {"name": method, **(method_options or {})},
              "train": {"epochs": 1.0, "batch_size": 32, "lr": lr, "seed": seed, "log_every": 10},
              "eval": {"batch_size": 64, "seed": 0}, "output": {"dir": str(run)}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    manifest = {
        "status": status, "error": error, "method": method, "task": "classification", "model": "minilm",
        "seed": seed, "recipe_hash": f"{method}-{seed}", "trainable_parameters": trainable,
        "total_parameters": total, "trainable_percent": 100 * trainable / total, "train_seconds": train_seconds,
        "wall_seconds": train_seconds + 5, "train_tokens": 40_000, "tokens_per_second": 40_000 / train_seconds,
        "peak_memory_mb": peak, "artifact_bytes": trainable * 4 + 2_000,
        "eval_identity": identity or SST2_IDENTITY,
        "final_eval": {} if accuracy is None else {"accuracy": accuracy, "macro_f1": accuracy - 0.01,
                                                   "examples": 872},
    }
    for key in drop:
        manifest.pop(key, None)
    (run / "manifest.json").write_text(json.dumps(manifest))
    if metrics is None:
        metrics = [{"step": s, "loss": 1.0 / s, "lr": 1e-3 * (1 - s / 40), "tokens_per_s": 4000.0}
                   for s in (10, 20, 30, 40)] + [{"step": 40, "eval_accuracy": accuracy or 0.5, "eval_loss": 0.4}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if final:
        (run / "final").mkdir()
    return run


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
