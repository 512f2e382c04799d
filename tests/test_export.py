"""`llmtune export`: merged exports load with plain transformers and match the unmerged
model; methods that cannot merge export their trained parameters only."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from llmtune.console import Reporter

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# name -> (model, task, method options). Short runs on tiny models: enough steps at a high
# learning rate that the trained model clearly differs from its base.
RUNS = {
    "lora-cls": ("tiny-bert", "classification", {"name": "lora", "r": 4, "target_modules": ["query", "value"]}),
    "dora-sft": ("tiny-llama", "sft", {"name": "lora", "r": 4, "dora": True, "target_modules": "all-linear"}),
    "ia3-sft": ("tiny-gpt2", "sft", {"name": "ia3"}),
    "adapter-cls": ("tiny-bert", "classification", {"name": "adapter", "bottleneck_size": 8}),
    "full-sft": ("tiny-llama", "sft", {"name": "full"}),
}



class RecordingReporter(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def _raw(model: str, task: str, method: dict) -> dict:
    if task == "classification":
        data = {"task": task, "train": {"path": str(RECIPES / "data/sst2_train.tsv"), "limit": 48},
                "columns": {"text": "sentence", "label": "label"}, "max_length": 32}
    else:
        data = {"task": task, "train": {"path": str(RECIPES / "data/alpaca_tiny.json"), "limit": 24}, "max_length": 64}
    data["eval_fraction"] = 0.0
    return {"model": {"name": model}, "data": data, "method": method,
            "train": {"max_steps": 6, "batch_size": 8, "lr": 2e-2 if method["name"] != "full" else 2e-3,
                      "log_every": 3}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train each run of RUNS once for the whole module (caches kept in the temp dir)."""
    from llmtune.recipe.load import recipe_from_dict
    from llmtune.train.session import run_recipe

    root = tmp_path_factory.mktemp("export-runs")
    done = {}
    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng():
        mp.setenv("LLMTUNE_CACHE", str(root / "cache"))
        for name, (model, task, method) in RUNS.items():
            loaded = recipe_from_dict(_raw(model, task, method))
            rep = RecordingReporter()
            run_recipe(loaded, rep, output=root / name)
            done[name] = (root / name, rep.lines)
    return done


def _inputs(task: str):
    from llmtune.models.load import load_tokenizer

    tok = load_tokenizer("tiny-bert" if task == "classification" else "tiny-llama")
    enc = tok(["a gripping , funny film", "the plot goes nowhere at all and nobody cares"],
              padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _unmerged_logits(run_dir: Path, ids, mask):
    from llmtune.runs.open import open_run

    model = open_run(run_dir).trained_model()
    model.eval()
    with torch.no_grad():
        return model(ids, mask)[1]


def _plain_transformers_logits(folder: Path, task: str, ids, mask):
    """Load with transformers alone (peft made unimportable) and apply the head by hand."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForCausalLM

    from transformers.utils import import_utils

    saved = sys.modules.get("peft")
    sys.modules["peft"] = None  # any attempt to use peft now raises ImportError
    import_utils.is_peft_available.cache_clear()
    try:
        if task == "classification":
            body = AutoModel.from_pretrained(folder).eval()
        else:
            body = AutoModelForCausalLM.from_pretrained(folder).eval()
    finally:
        if saved is not None:
            sys.modules["peft"] = saved
        else:
            del sys.modules["peft"]
        # transformers caches "peft is missing"; later tests (trl with a peft_config) need the truth.
        import_utils.is_peft_available.cache_clear()
    with torch.no_grad():
        if task != "classification":
            return body(input_ids=ids, attention_mask=mask).logits
        info = json.loads((folder / "llmtune.json").read_text())
        assert info["pooling"] == "mean"
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1)
        head = load_file(str(folder / "head.safetensors"))
        return pooled @ head["weight"].T + head["bias"]


def _base_logits(model: str, task: str, ids, mask):
    from llmtune.models.load import load_body

    body = load_body(model, task).eval()
    with torch.no_grad():
        out = body(input_ids=ids, attention_mask=mask)
    return out.logits if task != "classification" else out.last_hidden_state


@pytest.mark.parametrize("name", ["lora-cls", "dora-sft", "ia3-sft", "full-sft"])
def test_merged_export_loads_with_plain_transformers_and_matches(name, runs, cli, tmp_path):
    run_dir, _ = runs[name]
    model, task, _ = RUNS[name]
    out = tmp_path / "merged"
    res = cli("export", run_dir, "--out", out, "--merge")
    assert res.code == 0, res.err
    assert "merged" in res.out
    assert not (out / "adapter_config.json").exists()
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert json.loads((out / "llmtune.json").read_text())["export"]["merged"] is True
    ids, mask = _inputs(task)
    merged = _plain_transformers_logits(out, task, ids, mask)
    torch.testing.assert_close(merged, _unmerged_logits(run_dir, ids, mask), rtol=0, atol=1e-5)
    if task != "classification":
        # Training changed the model, so agreement above is not two copies of the base.
        assert (merged - _base_logits(model, task, ids, mask)).abs().max() > 1e-3


def test_adapter_only_export_is_the_default(runs, cli, tmp_path):
    run_dir, _ = runs["lora-cls"]
    out = tmp_path / "lora-only"
    res = cli("export", run_dir, "--out", out)
    assert res.code == 0, res.err
    assert "adapter-only" in res.err and "--merge" in res.err
    assert (out / "adapter_model.safetensors").exists() and (out / "head.safetensors").exists()
    assert not (out / "model.safetensors").exists()


def test_non_mergeable_method_exports_adapter_only(runs, cli, tmp_path):
    run_dir, _ = runs["adapter-cls"]
    out = tmp_path / "adapter-only"
    res = cli("export", run_dir, "--out", out, "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    assert result["form"] == "adapter-only"
    assert "cannot be merged" in result["message"]
    assert {"bottleneck_adapter.safetensors", "bottleneck_adapter.json", "head.safetensors"} <= set(result["files"])
    assert "model.safetensors" not in result["files"]


def test_merge_of_non_mergeable_method_exits_2_and_says_what_to_do(runs, cli, tmp_path):
    run_dir, _ = runs["adapter-cls"]
    out = tmp_path / "nope"
    res = cli("export", run_dir, "--out", out, "--merge")
    assert res.code == 2
    assert "cannot be merged" in res.err and "Drop --merge" in res.err and "lora" in res.err
    assert "Traceback" not in res.err
    assert not out.exists()


def test_export_refuses_a_non_run_and_a_full_out_folder(runs, cli, tmp_path):
    res = cli("export", tmp_path, "--out", tmp_path / "x")
    assert res.code == 2 and "not a run directory" in res.err
    assert "recipe file" not in res.err  # export takes a run, never a recipe
    run_dir, _ = runs["lora-cls"]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    res = cli("export", run_dir, "--out", taken)
    assert res.code == 2 and "--overwrite" in res.err
    assert (taken / "keep.txt").read_text() == "mine"


def test_export_overwrite_replaces_only_an_earlier_export(runs, cli, tmp_path):
    """`export --out FOLDER --overwrite` used to delete any folder it named (a user's folder of
    other files included), where `train --overwrite` refuses a folder llmtune did not write."""
    run_dir, _ = runs["lora-cls"]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    res = cli("export", run_dir, "--out", taken, "--overwrite")
    assert res.code == 2, res.err
    assert f"--out {taken} holds files but is not an llmtune export" in res.err and "refusing" in res.err
    assert "Traceback" not in res.err
    assert (taken / "keep.txt").read_text() == "mine"

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    res = cli("export", run_dir, "--out", a_file, "--overwrite")
    assert res.code == 2 and f"--out {a_file} is a file" in res.err and "Traceback" not in res.err
    assert a_file.read_text() == "mine"

    # A run directory is not an export either: --overwrite must not replace it.
    other_run = runs["adapter-cls"][0]
    res = cli("export", run_dir, "--out", other_run, "--overwrite")
    assert res.code == 2 and "not an llmtune export" in res.err
    assert (other_run / "final").is_dir()

    out = tmp_path / "export"
    out.mkdir()  # an empty folder needs no --overwrite
    assert cli("export", run_dir, "--out", out).code == 0
    (out / "stale.txt").write_text("from an earlier export")
    res = cli("export", run_dir, "--out", out, "--overwrite")
    assert res.code == 0, res.err
    assert not (out / "stale.txt").exists() and (out / "llmtune.json").exists()


def test_export_into_a_folder_that_holds_the_run_is_refused(runs, cli, tmp_path):
    """`llmtune export runs/lora --out runs --overwrite` used to replace runs/ with the export,
    deleting the run it exported (and every run beside it)."""
    import shutil

    run_dir = tmp_path / "runs" / "lora"
    shutil.copytree(runs["lora-cls"][0], run_dir)
    (tmp_path / "runs" / "other-run.txt").write_text("mine")
    for out in (tmp_path / "runs", tmp_path):
        res = cli("export", run_dir, "--out", out, "--overwrite")
        assert res.code == 2, res.err
        assert f"--out {out}: holds the run being exported ({run_dir})" in res.err
        assert "Traceback" not in res.err
    assert (run_dir / "final").is_dir() and (tmp_path / "runs" / "other-run.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["lora-cls", "adapter-cls", "full-sft"])
def test_trainable_parameters_are_logged_and_in_the_manifest(name, runs):
    run_dir, lines = runs[name]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    trainable, total = manifest["trainable_parameters"], manifest["total_parameters"]
    assert 0 < trainable <= total
    assert manifest["trainable_percent"] == pytest.approx(100 * trainable / total)
    if name != "full-sft":
        assert trainable < total
    assert any(f"{trainable:,} trainable of {total:,}" in line for line in lines)
