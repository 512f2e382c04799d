"""Run under `torchrun --nproc_per_node 2`: several jobs in one launch (a launch costs two
interpreter start-ups and a process group; the jobs share them). Usage:

    torchrun --nproc_per_node 2 tests/dist_driver.py SPEC.json

SPEC is a list of {"kind": "train", "recipe": {...}, "out": DIR} (the real `llmtune train`
command line run in this process, exit code in DIR/result.json, its log in the launch's
stderr) or {"kind": "grads", "recipe": {...}, "out": FILE} (the first
step's gradients after DDP's all-reduce, as safetensors). A failing train job is recorded
and the next one runs; only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import sys
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
    """The real command line, `llmtune train RECIPE --output DIR`, in this process."""
    import yaml

    from llmtune.cli import app
    from llmtune.cli.common import run_app

    out = Path(job["out"])
    recipe = out.with_name(out.name + ".yaml")
    if rank == 0:
        recipe.write_text(yaml.safe_dump(job["recipe"]))
    _barrier()
    sys.argv = ["llmtune", "train", str(recipe), "--output", str(out)]
    print(f"== job {out.name}", file=sys.stderr, flush=True)
    code = run_app(app)
    _barrier()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps({"ok": code == 0, "code": code}))


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def _grads(job: dict, rank: int) -> None:
    from grad_probe import first_step_gradients
    from safetensors.torch import save_file

    grads = first_step_gradients(job["recipe"])
    if rank == 0:
        save_file({k: v.contiguous() for k, v in grads.items()}, job["out"])


if __name__ == "__main__":
    main(sys.argv[1])
