"""The precision policy (issue 9): `model.dtype: auto` trains float32 weights even from a
checkpoint saved in bfloat16 (transformers 5 would load it as bf16, and AdamW would step bf16
weights with no float32 master copy); pure bf16 only when the recipe asks, and manifest.json
records which one ran."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DATA, tiny_sst2

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bf16_llama(tmp_path_factory):
    """A tiny Llama saved in bfloat16, as most published LLM checkpoints are."""
    from llmtune.models.builtin import build_tiny, load_tiny_tokenizer

    folder = tmp_path_factory.mktemp("bf16-llama")
    build_tiny("tiny-llama", "causal_lm").to(torch.bfloat16).save_pretrained(folder)
    load_tiny_tokenizer().save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text()).get("dtype") == "bfloat16"
    return folder


def _recipe(tmp_path, model: str, method: dict, dtype: str | None = None, task: str = "sft") -> dict:
    data = ({"task": "sft", "train": str(DATA / "alpaca_tiny.json"), "max_length": 48} if task == "sft" else
            {"task": "classification", "train": str(tiny_sst2(tmp_path, 16)), "max_length": 24,
             "columns": {"text": "sentence"}})
    model_section = {"name": str(model), **({"dtype": dtype} if dtype else {})}
    if task == "classification":
        model_section["pooling"] = "last"
    return {"model": model_section, "data": {**data, "eval_fraction": 0.25}, "method": method,
            "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-3}, "output": {"dir": str(tmp_path / "run")}}


def _saved_dtypes(folder) -> set[str]:
    from safetensors import safe_open

    found = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            found |= {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    return found


def _trained_dtypes(run) -> tuple[set, set]:
    """(dtypes of all parameters, of the parameters the method trains) of the reopened run."""
    from llmtune.runs.open import open_run

    model = open_run(run).trained_model()
    return {p.dtype for p in model.parameters()}, {p.dtype for n, p in model.named_parameters()
                                                   if "lora_" in n or "head" in n}


def test_auto_trains_float32_master_weights_from_a_bf16_checkpoint(bf16_llama, tmp_path, cli, write_recipe):
    res = cli("train", write_recipe(_recipe(tmp_path, bf16_llama, {"name": "full"})), "--json")
    assert res.code == 0, res.err
    run = tmp_path / "run"
    assert _saved_dtypes(run / "final") == {"F32"}  # the weights AdamW stepped were float32
    assert _trained_dtypes(run)[0] == {torch.float32}
    precision = json.loads((run / "manifest.json").read_text())["precision"]
    # This machine has no GPU, so no autocast: plain fp32. (On a bf16 GPU: fp32 master + bf16 autocast.)
    assert precision == {"weights_dtype": "float32", "trainable_dtype": "float32", "autocast_dtype": None,
                         "policy": "fp32"}


def test_pure_bf16_only_when_asked_and_recorded(bf16_llama, tmp_path, cli, write_recipe):
    res = cli("train", write_recipe(_recipe(tmp_path, bf16_llama, {"name": "full"}, dtype="bfloat16")), "--json")
    assert res.code == 0, res.err
    run = tmp_path / "run"
    assert _saved_dtypes(run / "final") == {"BF16"}
    assert _trained_dtypes(run)[0] == {torch.bfloat16}
    precision = json.loads((run / "manifest.json").read_text())["precision"]
    assert precision["policy"] == "pure bf16" and precision["weights_dtype"] == precision["trainable_dtype"] \
        == "bfloat16"


@pytest.mark.parametrize("dtype,expected", [(None, torch.float32), ("bfloat16", torch.bfloat16)])
def test_adapter_and_head_follow_the_policy(dtype, expected, bf16_llama, tmp_path, cli, write_recipe):
    """LoRA on a classifier: the adapter and the head are float32 under the default (peft would
    keep its adapter float32 anyway, the head followed nothing), bf16 only under pure bf16."""
    recipe = _recipe(tmp_path, bf16_llama, {"name": "lora", "r": 2, "target_modules": ["q_proj", "v_proj"]},
                     dtype=dtype, task="classification")
    res = cli("train", write_recipe(recipe), "--json")
    assert res.code == 0, res.err
    every, trained = _trained_dtypes(tmp_path / "run")
    assert every == trained == {expected}


def test_preference_loaders_keep_float32(bf16_llama):
    """The trl-backed methods load their policy and reward model through the same policy."""
    from types import SimpleNamespace

    from llmtune.methods.preference._models import load_policy, load_reward_base
    from llmtune.models.load import load_tokenizer

    model = SimpleNamespace(name=str(bf16_llama), revision=None, trust_remote_code=False, dtype="auto")
    recipe = SimpleNamespace(model=model, data=SimpleNamespace(task="preference"))
    assert {p.dtype for p in load_policy(recipe).parameters()} == {torch.float32}
    reward = load_reward_base(model, load_tokenizer(str(bf16_llama)))
    assert {p.dtype for p in reward.parameters()} == {torch.float32}
