"""Two real CPU processes (torchrun, gloo): every supervised method trains under DDP, the
loss is weighted by tokens across micro-batches and processes, and `train.epochs` counts
global batches. One torchrun launch runs all the DDP jobs (tests/dist_driver.py): a
launch costs two interpreter start-ups, the jobs themselves about a second each."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DATA, tiny_sst2

from llmtune.methods.registry import all_methods

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

HERE = Path(__file__).resolve().parent
TASKS = {"classification": "tiny-bert", "sft": "tiny-llama"}


def torchrun(args: list[str], cwd: Path, port: int, timeout: int = 600, env: dict | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def method_recipe(task: str, method: str, sst2: Path, out: Path) -> dict:
    data = ({"task": "classification", "train": str(sst2), "eval_fraction": 0.25, "max_length": 24,
             "columns": {"text": "sentence", "label": "label"}} if task == "classification" else
            {"task": "sft", "train": {"path": str(DATA / "alpaca_tiny.json"), "limit": 24}, "eval_fraction": 0.25,
             "max_length": 48})
    return {"model": {"name": TASKS[task]}, "data": data, "method": {"name": method},
            "train": {"max_steps": 3, "batch_size": 4, "lr": 1e-3, "log_every": 1}, "eval": {"limit": 4},
            "output": {"dir": str(out)}}


# The trl-backed methods on tiny-llama: bundled data of each kind, 2 steps of batch 2 per process.
_PAIRS = {"task": "preference", "train": {"path": str(DATA / "hh_rlhf_harmless_64.jsonl"), "limit": 16},
          "eval_fraction": 0.25, "max_length": 64}
PREFERENCE_CASES = {
    "reward": (_PAIRS, {"name": "reward"}),
    "dpo": (_PAIRS, {"name": "dpo"}),
    "orpo": (_PAIRS, {"name": "orpo"}),
    "kto": ({"task": "unpaired_preference", "train": str(DATA / "kto_en_demo_32.json"), "eval_fraction": 0.25,
             "max_length": 64, "columns": {"messages": "messages", "desirable": "label"}}, {"name": "kto"}),
    "rl": ({"task": "prompts", "train": {"path": str(DATA / "hh_rlhf_harmless_64.jsonl"), "limit": 16},
            "eval_fraction": 0.25, "max_length": 64},
           {"name": "rl", "algorithm": "grpo", "num_generations": 2, "max_completion_length": 8,
            "reward_function": "llmtune.methods.preference.rewards:char_fraction", "reward_kwargs": {"char": "e"}}),
}


def preference_recipe(method: str, out: Path) -> dict:
    data, section = PREFERENCE_CASES[method]
    return {"model": {"name": "tiny-llama"}, "data": data, "method": section,
            "train": {"max_steps": 2, "batch_size": 2, "lr": 1e-4, "log_every": 1}, "eval": {"limit": 4, "batch_size": 2},
            "output": {"dir": str(out)}}


def grads_recipe(batch_size: int, grad_accum: int) -> dict:
    """SFT rows of very different lengths; no dropout, no length grouping (the same 8 rows
    make the step in every layout)."""
    return {"model": {"name": "tiny-llama"},
            "data": {"task": "sft", "train": {"path": str(DATA / "alpaca_tiny.json"), "limit": 32},
                     "eval_fraction": 0.0, "max_length": 64},
            "method": {"name": "full"},
            "train": {"max_steps": 1, "batch_size": batch_size, "grad_accum": grad_accum, "group_by_length": False}}


def supervised_methods(task: str) -> list[str]:
    """The methods that train `task` in the run's loop or their own (in-context trains nothing)."""
    return sorted(n for n, m in all_methods().items() if task in m.tasks and m.trains)


def contrastive_recipe(root: Path) -> dict:
    """contrastive takes its negatives from one batch, so it refuses several processes (exit 2)."""
    data = root / "retrieval"
    shutil.copytree(HERE / "assets" / "retrieval", data)
    return {"model": {"name": "tiny-bert"},
            "data": {"task": "retrieval", "train": str(data / "pairs.jsonl"), "eval": str(data / "queries.jsonl"),
                     "max_length": 64, "retrieval": {"documents": str(data / "documents.jsonl"),
                                                     "qrels": str(data / "qrels.tsv"), "chunk_tokens": 32}},
            "method": {"name": "contrastive"}, "train": {"max_steps": 3, "batch_size": 4}}


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    """One torchrun launch: each supervised method x task for 3 steps, and the first step's
    gradient at 2 processes x batch 4."""
    root = tmp_path_factory.mktemp("ddp")
    sst2 = tiny_sst2(root, 32)
    jobs = [{"kind": "train", "recipe": method_recipe(task, m, sst2, root / f"{task}-{m}"), "out": str(root / f"{task}-{m}")}
            for task in TASKS for m in supervised_methods(task)]
    jobs += [{"kind": "train", "recipe": preference_recipe(m, root / f"trl-{m}"), "out": str(root / f"trl-{m}")}
             for m in PREFERENCE_CASES]
    jobs.append({"kind": "grads", "recipe": grads_recipe(4, 1), "out": str(root / "grads.safetensors")})
    rows = short_sft_rows(root)
    jobs.append({"kind": "train", "recipe": packed_recipe(rows, root / "packed-ddp", grad_accum=1),
                 "out": str(root / "packed-ddp")})
    jobs.append({"kind": "train", "recipe": resume_recipe(root), "out": str(root / "resume-reference")})
    jobs.append({"kind": "train", "recipe": contrastive_recipe(root), "out": str(root / "retrieval-contrastive")})
    spec = root / "spec.json"
    spec.write_text(json.dumps(jobs))
    res = torchrun([str(HERE / "dist_driver.py"), str(spec)], root, port=29541)
    assert res.returncode == 0, res.stderr[-4000:]
    (root / "launch.log").write_text(res.stderr)
    return root


@pytest.mark.parametrize("task", list(TASKS))
def test_every_supervised_method_trains_under_two_processes(launch, task):
    log = (launch / "launch.log").read_text()
    failed = {}
    for method in supervised_methods(task):
        run = launch / f"{task}-{method}"
        if not json.loads((run / "result.json").read_text())["ok"]:
            failed[method] = log.split(f"== job {run.name}\n", 1)[-1].split("== job ", 1)[0][-1500:]
        elif not all_methods()[method].trains_itself:  # the linear probe counts L-BFGS iterations
            assert json.loads((run / "manifest.json").read_text())["steps"] == 3, method
    assert not failed, "\n\n".join(f"{m}: {e}" for m, e in failed.items())


def test_every_trl_backed_method_trains_under_two_processes(launch):
    """Reward, DPO, ORPO, KTO and RL train through trl's trainers under the same 2-rank launch;
    together with the supervised test above, every registered method."""
    log = (launch / "launch.log").read_text()
    untrained = {n for n, m in all_methods().items() if not m.trains}
    assert set(PREFERENCE_CASES) | set(supervised_methods("classification")) | set(supervised_methods("sft")) \
        | {"contrastive"} | untrained == set(all_methods())
    failed = {}
    for method in PREFERENCE_CASES:
        run = launch / f"trl-{method}"
        if not json.loads((run / "result.json").read_text())["ok"]:
            failed[method] = log.split(f"== job {run.name}\n", 1)[-1].split("== job ", 1)[0][-1500:]
            continue
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "finished" and manifest["steps"] == 2, (method, manifest.get("status"))
        assert (run / "final").is_dir(), method
    assert not failed, "\n\n".join(f"{m}: {e}" for m, e in failed.items())


def test_parameters_no_loss_reaches_are_frozen_and_not_counted(launch):
    """BERT's pooler: llmtune's head pools the hidden states itself, so under `full` the pooler
    can never get a gradient (DDP used to stop at step 2 on it)."""
    manifest = json.loads((launch / "classification-full" / "manifest.json").read_text())
    frozen = manifest["frozen_unreached"]
    assert frozen and all(name.startswith("body.pooler.") for name in frozen), frozen
    pooler = 64 * 64 + 64  # tiny-bert: hidden 64, a dense layer
    assert manifest["trainable_parameters"] == manifest["total_parameters"] - pooler


def test_gradient_is_the_same_for_one_batch_accumulation_and_two_processes(launch):
    """Loss normalised by the loss tokens of the whole optimizer step: batch 8 in one step,
    batch 2 x grad_accum 4 and 2 processes x batch 4 give one gradient."""
    from grad_probe import first_step_gradients
    from safetensors.torch import load_file

    one = first_step_gradients(grads_recipe(8, 1))
    accumulated = first_step_gradients(grads_recipe(2, 4))
    ranks = load_file(str(launch / "grads.safetensors"))
    assert one.keys() == accumulated.keys() == ranks.keys()
    for other in (accumulated, ranks):
        for name, g in one.items():
            assert torch.allclose(other[name], g, rtol=1e-4, atol=1e-7), (name, (other[name] - g).abs().max())
    # The layouts really differ in tokens per micro-batch: a per-micro-batch mean would not
    # give this gradient (guards against a test that cannot fail).
    lengths = _micro_batch_loss_tokens()
    assert len(set(lengths)) > 1, lengths


def _micro_batch_loss_tokens() -> list[int]:
    from llmtune.data.batching import epoch_batches, loss_items
    from llmtune.data.pipeline import prepare_data
    from llmtune.models.builtin import load_tiny_tokenizer
    from llmtune.recipe import recipe_from_dict

    data = prepare_data(recipe_from_dict(grads_recipe(2, 4)).recipe.data, load_tiny_tokenizer())
    batches = epoch_batches([len(e["input_ids"]) for e in data.train], 2, 0, 0, group_by_length=False)[:4]
    return [sum(loss_items(data.train[i]) for i in b) for b in batches]


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


def packed_recipe(rows: str, out: Path, grad_accum: int) -> dict:
    return {
        "model": {"name": "tiny-llama"},
        # Plain prompts (not tiny-llama's chat template): the row counts below are sized for them.
        "data": {"task": "sft", "train": rows, "eval_fraction": 0.1, "max_length": 128, "prompt_style": "plain"},
        # No dropout anywhere, so both runs draw no random numbers while training; 3 steps of
        # 2 batches of 2 packed rows stay inside the first epoch of 7 batches (DDP drops the odd
        # last batch, one process does not).
        "method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"max_steps": 3, "batch_size": 2, "grad_accum": grad_accum, "lr": 5e-3, "log_every": 1,
                  "group_by_length": False, "packing": True},
        "output": {"dir": str(out)},
    }


def test_two_processes_match_one_with_grad_accum_on_packed_rows(launch, cli, write_recipe):
    """DDP's mean over processes is grad_accum's mean over micro-batches: 2 processes x 2
    packed rows give the loss curve and weights of 1 process x 2 rows x grad_accum 2."""
    from safetensors.torch import load_file

    single = launch / "packed-single"
    res = cli("train", write_recipe(packed_recipe(str(launch / "short_sft.jsonl"), single, grad_accum=2)))
    assert res.code == 0, res.err
    log = (launch / "launch.log").read_text()
    assert log.count(f"run directory: {launch / 'packed-ddp'}") == 1  # one process speaks
    packed = re.search(r"packing: (\d+) examples in (\d+) rows", res.err)
    assert packed and int(packed[1]) > 2 * int(packed[2]), res.err  # several examples share each row
    assert packed[0] in log  # the 2-process run packed the same rows the same way
    curves = []
    for run in (single, launch / "packed-ddp"):
        records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        curves.append([r["loss"] for r in records if "loss" in r] + [r["eval_loss"] for r in records if "eval_loss" in r])
    assert len(curves[0]) == 4
    assert curves[0] == pytest.approx(curves[1], rel=1e-6)
    # Weights: the all-reduce sums in another order, and AdamW turns a last-bit difference in
    # a near-zero gradient into a visible step, so compare the whole update, not elements.
    a = load_file(str(single / "final" / "adapter_model.safetensors"))
    b = load_file(str(launch / "packed-ddp" / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].norm() > 0, key  # lora_B starts at zero: a norm means it trained
        assert (a[key] - b[key]).norm() <= 0.02 * a[key].norm(), key


def resume_recipe(tmp_path: Path) -> dict:
    """Full finetuning of tiny-bert with dropout in the body and before the head; 48 rows /
    batch 4 = 12 batches, so 6 rounds of 2 processes per epoch: 2 epochs are 12 steps."""
    return {
        "model": {"name": "tiny-bert", "head_dropout": 0.2},
        "data": {"task": "classification", "train": str(tiny_sst2(tmp_path, 60)), "eval_fraction": 0.2,
                 "columns": {"text": "sentence", "label": "label"}, "max_length": 32},
        "method": {"name": "full"},
        "train": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "warmup_ratio": 0.2, "save_every": 2,
                  "log_every": 1, "seed": 3},
    }


def test_epochs_count_global_batches_and_a_killed_run_resumes_exactly(launch, write_recipe):
    """The uninterrupted 2-process run is the launch's; this test kills a second one at a
    step it chooses and resumes it under torchrun again."""
    import signal
    import time

    from test_resume import assert_same_weights, loss_records

    tmp_path = launch
    recipe = write_recipe(resume_recipe(launch))
    ref, cut = launch / "resume-reference", launch / "killed"
    assert json.loads((ref / "result.json").read_text())["ok"], (ref / "result.json").read_text()
    train = ["-m", "llmtune", "train", str(recipe), "--output"]

    # epochs: 2 under 2 processes is 12 steps of 2 global batches, not 24.
    assert json.loads((ref / "manifest.json").read_text())["total_steps"] == 12
    records = [r for r in loss_records(ref) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, 13))
    assert [round(r["epoch"], 6) for r in records] == [round(s / 6, 6) for s in range(1, 13)]
    assert records[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # the schedule spans exactly 2 epochs

    hold_at = 5  # after the step-4 checkpoint, mid-way to the next one
    log = tmp_path / "killed.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    held = [str(Path(__file__).resolve().parent / "hold_driver.py"), str(hold_at), *train[2:]]  # tests/hold_driver.py
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29545", *held, str(cut)], stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), env=env, cwd=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 300
    while f"holding after step {hold_at}" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    # torchrun starts each rank in a session of its own: kill the ranks by pid, then torchrun.
    import psutil

    ranks = psutil.Process(proc.pid).children(recursive=True)
    for child in ranks:
        child.send_signal(signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    psutil.wait_procs(ranks, timeout=30)
    assert not (cut / "final").exists()

    # Each process saved its own random streams (dropout masks differ across processes).
    rng = torch.load(cut / "checkpoints" / "step-4" / "rng.pt", weights_only=True)
    assert len(rng["ranks"]) == 2 and not torch.equal(rng["ranks"][0]["torch"], rng["ranks"][1]["torch"])

    res = torchrun([*train, str(cut), "--resume"], tmp_path, port=29547)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from step-4" in res.stderr
    assert_same_weights(ref / "final", cut / "final")
    for a, b in zip(loss_records(ref), loss_records(cut), strict=True):
        assert b == pytest.approx(a, abs=1e-6)


def test_contrastive_refuses_two_processes_with_exit_2(launch):
    """Its in-batch negatives would come from each process's half batch: a clear refusal, not
    a quietly different loss."""
    assert json.loads((launch / "retrieval-contrastive" / "result.json").read_text())["code"] == 2
    log = (launch / "launch.log").read_text().split("== job retrieval-contrastive\n", 1)[-1]
    assert "method contrastive trains in one process" in log and "Traceback" not in log.split("== job ", 1)[0]
