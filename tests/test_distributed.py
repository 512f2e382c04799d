"""Two processes under torchrun train the same model as one process accumulating over the
same batches: DDP averages the ranks' gradients exactly as grad_accum averages micro-batches.
The recipe packs its examples (train.packing), as CI's multi-process check asks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import DATA

pytestmark = pytest.mark.slow


def short_sft_rows(tmp_path) -> str:
    """48 instruction/response pairs of 1 to 6 words each: several fit in one packed row."""
    import random

    rng = random.Random(0)
    words = (DATA / "sst2_train.tsv").read_text().split()[:2000]
    path = tmp_path / "short_sft.jsonl"
    rows = [{"instruction": " ".join(rng.sample(words, rng.randint(1, 4))),
             "output": " ".join(rng.sample(words, rng.randint(1, 6)))} for _ in range(48)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _recipe(write_recipe, name: str, out, grad_accum: int):
    return write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "sft", "train": short_sft_rows(out.parent), "eval_fraction": 0.1, "max_length": 128},
        # No dropout anywhere, so both runs draw no random numbers while training; 3 steps of
        # 2 batches of 2 packed rows stay inside the first epoch of 7 batches (DDP drops the odd
        # last batch, one process does not).
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"max_steps": 3, "batch_size": 2, "grad_accum": grad_accum, "lr": 5e-3, "log_every": 1,
                  "group_by_length": False, "packing": True},
        "output": {"dir": str(out)},
    }, name)


def _run(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_two_ranks_match_one_process_with_grad_accum(write_recipe, tmp_path):
    from safetensors.torch import load_file

    single = _recipe(write_recipe, "single.yaml", tmp_path / "single", grad_accum=2)
    ddp = _recipe(write_recipe, "ddp.yaml", tmp_path / "ddp", grad_accum=1)
    _run([sys.executable, "-m", "llmtune", "train", single], tmp_path)
    res = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                "-m", "llmtune", "train", ddp], tmp_path)
    assert res.stderr.count("run directory:") == 1  # one process speaks
    assert "packing: 43 examples in 13 rows" in res.stderr
    # The loss curves agree to float precision: the same batches, the same averaged gradients.
    curves = []
    for run in ("single", "ddp"):
        records = [json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        curves.append([r["loss"] for r in records if "loss" in r] + [r["eval_loss"] for r in records if "eval_loss" in r])
    assert len(curves[0]) == 4
    assert curves[0] == pytest.approx(curves[1], rel=1e-6)
    # Weights: the all-reduce sums in another order, and AdamW turns a last-bit difference in
    # a near-zero gradient into a visible step, so compare the whole update, not elements.
    a = load_file(str(tmp_path / "single" / "final" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].norm() > 0, key  # lora_B starts at zero: a norm means it trained
        assert (a[key] - b[key]).norm() <= 0.02 * a[key].norm(), key
