"""Run tracking: the records metrics.jsonl gets, also sent where users already look
(TensorBoard, Weights & Biases, MLflow, trackio), through accelerate's tracker classes.

One hook for every trainer: `RunDir.log_metrics` hands each record to the run's trackers
(the supervised loop, the trl-backed methods and the linear probe all log through it), and
`run_recipe` starts them (with the resolved recipe as hyperparameters) and finishes them.
Only the main process opens a run directory, so only it logs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
import os
from importlib.util import find_spec

from llmtune.errors import UserError

# tracker -> (modules that provide it, any one of them; the install command)
PACKAGES = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "wandb": (("wandb",), "pip install wandb"),
    "mlflow": (("mlflow",), "pip install mlflow"),
    "trackio": (("trackio",), "pip install trackio"),
}
TENSORBOARD_DIR = "tracking"
"""TensorBoard event files go to RUN_DIR/tracking/<run name>/."""


def check_installed(names: Sequence[str]) -> None:
    """Refuse (exit 2) before anything is written when a tracker's package is missing."""
    missing = [n for n in names if not any(find_spec(m) for m in PACKAGES[n][0])]
    if missing:
        commands = "; ".join(f"{n}: `{PACKAGES[n][1]}`" for n in missing)
        raise UserError(f"train.report_to lists {', '.join(missing)}, but the package is not installed ({commands}); "
                        f"install it or remove it from train.report_to")


def hyperparameters(recipe) -> dict:
    """The resolved recipe flattened to `section.key: scalar` (what trackers accept)."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (bool, int, float, str)):
            flat[prefix] = value
        else:  # None, lists: trackers take scalars only
            flat[prefix] = json.dumps(value)

    walk("", recipe.model_dump(mode="json"))
    return flat


class Trackers:
    """The started trackers of one run: `log(record)` per metrics record, `finish()` once."""

    def __init__(self, trackers: list):
        self.trackers = trackers

    def log(self, record: dict) -> None:
        values = {k: v for k, v in record.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if values:
            for tracker in self.trackers:
                tracker.log(values, step=record.get("step"))

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()


def _make(name: str, run_name: str, run_path):
    from accelerate import tracking

    project = "llmtune"
    if name == "tensorboard":
        return tracking.TensorBoardTracker(run_name, str(run_path / TENSORBOARD_DIR))
    if name == "wandb":  # accelerate passes its first argument to wandb.init as the project
        return tracking.WandBTracker(os.environ.get("WANDB_PROJECT", project), name=run_name, dir=str(run_path))
    if name == "mlflow":
        return tracking.MLflowTracker(experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", project),
                                      run_name=run_name)
    return tracking.TrackioTracker(project, name=run_name)


def start_tracking(recipe, run) -> Trackers | None:
    """Start the recipe's trackers for `run` (a RunDir) and log the recipe; None when none."""
    names = recipe.train.report_to
    if not names:
        return None
    check_installed(names)
    from accelerate import PartialState

    # accelerate's trackers (and their logging) need its process state; this is the one the
    # trainer's Accelerator or trl's TrainingArguments then joins (same devices, no precision set).
    PartialState()
    started = []
    for name in names:
        tracker = _make(name, run.path.name, run.path)
        tracker.start()
        tracker.store_init_configuration(hyperparameters(recipe))
        started.append(tracker)
    return Trackers(started)
