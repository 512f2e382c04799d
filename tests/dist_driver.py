"""Run under `torchrun --nproc_per_node 2`: several jobs in one launch (a launch costs two
interpreter start-ups and a process group; the jobs share them). Usage:

    torchrun --nproc_per_node 2 tests/dist_driver.py SPEC.json

SPEC is a list of {"kind": "train", "recipe": {...}, "out": DIR} (a whole `llmtune train`,
result in DIR/result.json) or {"kind": "grads", "recipe": {...}, "out": FILE} (the first
step's gradients after DDP's all-reduce, as safetensors). A failing train job is recorded
and the next one runs; only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(spec_path: str) -> None:
    import torch
    from accelerate.state import PartialState

    torch.set_num_threads(1)
    # One process group for every job: each run's end_training() would tear it down.
    destroy = PartialState.destroy_process_group
    PartialState.destroy_process_group = lambda self, group=None: None
    rank = int(os.environ.get("RANK", "0"))
    for job in json.loads(Path(spec_path).read_text()):
        if job["kind"] == "train":
            _train(job, rank)
        else:
            _grads(job, rank)
    destroy(PartialState())


def _train(job: dict, rank: int) -> None:
    from llmtune.console import Reporter
    from llmtune.recipe import recipe_from_dict
    from llmtune.train.session import run_recipe

    out = Path(job["out"])
    try:
        result = run_recipe(recipe_from_dict(job["recipe"]), Reporter(quiet=True), output=out)
        record = {"ok": True, "steps": result["steps"]}
    except Exception as exc:  # recorded for the test to report; the launch goes on
        record = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(record))


def _grads(job: dict, rank: int) -> None:
    from grad_probe import first_step_gradients
    from safetensors.torch import save_file

    grads = first_step_gradients(job["recipe"])
    if rank == 0:
        save_file({k: v.contiguous() for k, v in grads.items()}, job["out"])


if __name__ == "__main__":
    main(sys.argv[1])
