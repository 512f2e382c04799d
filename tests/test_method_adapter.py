"""Bottleneck adapters: placement per architecture, identity at start, only adapters train,
the documented save format, reload, generation, and the recipe/CLI path."""

from __future__ import annotations

import json

import pytest
import torch

from llmtune.errors import UserError
from tiny_lm import greedy, memorise, tiny_causal_lm
from llmtune.train.assemble import prepare_for_training, save_trained, load_into

ARCHS = {  # name -> (task, attention-output path, feed-forward-output path, block class)
    "tiny-bert": ("classification", "attention.output.dense", "output.dense", "BertLayer"),
    "tiny-llama": ("causal_lm", "self_attn.o_proj", "mlp.down_proj", "LlamaDecoderLayer"),
    "tiny-gpt2": ("causal_lm", "attn.c_proj", "mlp.c_proj", "GPT2Block"),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _method(**opts):
    from llmtune.methods.registry import get_method

    cls = get_method("adapter")
    return cls(cls.Config(name="adapter", **opts))


def _task_model(arch: str):
    from llmtune.models.builtin import build_tiny
    from llmtune.models.task_model import TaskModel

    task = ARCHS[arch][0]
    body = build_tiny(arch, task)
    if task == "classification":
        return TaskModel(body, task, num_labels=2, head_dropout=0.0)
    return TaskModel(body, task)


def _inputs():
    ids = torch.tensor([[5, 17, 300, 41, 9, 77, 2], [8, 120, 33, 64, 0, 0, 0]])
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    return ids, mask


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_adapters_sit_on_the_right_projections_and_start_as_identity(arch, placement):
    from llmtune.methods.adapters._layers import AdaptedProjection
    from llmtune.models.layers import transformer_blocks

    _, attn_path, ffn_path, block_cls = ARCHS[arch]
    model = _task_model(arch).eval()
    ids, mask = _inputs()
    with torch.no_grad():
        before = model(ids, mask)[1]
    prepare_for_training(model, _method(placement=placement))
    with torch.no_grad():
        after = model(ids, mask)[1]
    assert torch.equal(before, after), "a zero up-projection must leave the model unchanged"

    blocks = transformer_blocks(model.body)
    assert type(blocks[0]).__name__ == block_cls
    for block in blocks:
        assert isinstance(block.get_submodule(ffn_path), AdaptedProjection)
        assert isinstance(block.get_submodule(attn_path), AdaptedProjection) == (placement == "houlsby")
    wrapped = [m for m in model.modules() if isinstance(m, AdaptedProjection)]
    assert len(wrapped) == len(blocks) * (2 if placement == "houlsby" else 1)


def test_only_adapters_and_head_train_and_the_base_stays_put():
    model = _task_model("tiny-bert")
    prepare_for_training(model, _method(bottleneck_size=8, activation="gelu"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n or n.startswith("head.") for n in trainable)
    assert {"head.weight", "head.bias"} <= trainable
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    ids, mask = _inputs()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss, _ = model(ids, mask, torch.tensor([0, 1]))
        loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    adapter = model.body.encoder.layer[0].output.dense.adapter
    assert adapter.down.out_features == 8 and isinstance(adapter.act, torch.nn.GELU)
    assert adapter.up.weight.abs().sum() > 0, "the up-projection must have left zero"


@pytest.mark.parametrize("opts,width", [({}, 4), ({"reduction_factor": 8}, 8), ({"bottleneck_size": 5}, 5)])
def test_bottleneck_width_from_reduction_factor_or_size(opts, width):
    model = _task_model("tiny-llama")  # hidden size 64
    prepare_for_training(model, _method(**opts))
    assert model.body.model.layers[1].mlp.down_proj.adapter.down.out_features == width


def test_saved_folder_holds_only_adapter_tensors_in_the_documented_format(tmp_path):
    from safetensors.torch import load_file

    model = _task_model("tiny-bert")
    method = _method(placement="pfeiffer", reduction_factor=4)
    prepare_for_training(model, method)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # as if trained: the up-projections leave zero
    save_trained(model, method, tmp_path)
    config = json.loads((tmp_path / "bottleneck_adapter.json").read_text())
    assert config["format"] == "llmtune.bottleneck_adapter" and config["format_version"] == 1
    assert config["placement"] == "pfeiffer" and config["sites"] == {"ffn": "output.dense"}
    assert (config["hidden_size"], config["bottleneck_size"], config["num_layers"]) == (64, 16, 2)
    assert config["activation"] == "relu" and config["weights"] == "bottleneck_adapter.safetensors"
    weights = load_file(str(tmp_path / "bottleneck_adapter.safetensors"))
    assert sorted(weights) == sorted(f"layers.{i}.ffn.{lin}.{t}" for i in range(2) for lin in ("down", "up")
                                     for t in ("weight", "bias"))
    assert weights["layers.1.ffn.down.weight"].shape == (16, 64)
    assert (tmp_path / "head.safetensors").exists()
    assert not list(tmp_path.glob("model*.safetensors"))

    ids, mask = _inputs()
    model.eval()
    with torch.no_grad():
        expected = model(ids, mask)[1]
    fresh = _task_model("tiny-bert").eval()
    load_into(fresh, method, tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(ids, mask)[1], expected)


def test_load_refuses_a_different_base_model(tmp_path):
    model = _task_model("tiny-llama")
    method = _method()
    prepare_for_training(model, method)
    save_trained(model, method, tmp_path)
    other = _task_model("tiny-bert")
    with pytest.raises(UserError, match="base model they were trained on"):
        load_into(other, method, tmp_path)


def test_unknown_architecture_is_a_user_error():
    from torch import nn

    from llmtune.methods.adapters._layers import find_sites

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = nn.Linear(4, 4)

    body = nn.Module()
    body.layers = nn.ModuleList([Block(), Block()])
    with pytest.raises(UserError, match="cannot find the ffn output projection.*lora or ia3"):
        find_sites(body, "pfeiffer")


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-gpt2"])
def test_generation_uses_the_trained_adapters_and_memorises(arch):
    model, tok = tiny_causal_lm(arch)
    torch.manual_seed(0)
    prepare_for_training(model, _method())
    ids = torch.tensor([tok("the quick brown fox jumps over the lazy dog")["input_ids"]])
    prompt, target = ids[:, :3], ids[0, 3:].tolist()
    model.eval()
    untrained = greedy(model.body, prompt, len(target))
    losses = memorise(model, ids, steps=100, lr=5e-2)
    trained = greedy(model.body, prompt, len(target))
    assert losses[-1] < 0.5 * losses[0]
    assert trained != untrained
    assert trained == target


def test_adapter_recipe_trains_through_the_cli(cli, write_recipe, tmp_path):
    recipe = write_recipe({
        "model": {"name": "tiny-bert"},
        "data": {"task": "classification", "train": str(_sst2()), "columns": {"text": "sentence"},
                 "max_length": 32, "eval_fraction": 0.25},
        "method": {"name": "adapter", "placement": "pfeiffer", "bottleneck_size": 8},
        "train": {"max_steps": 3, "batch_size": 8, "lr": 1e-2},
    })
    res = cli("train", recipe, "-o", tmp_path / "run", "--json")
    assert res.code == 0, res.err
    assert "method adapter:" in res.err and "trainable of" in res.err
    final = tmp_path / "run" / "final"
    assert (final / "bottleneck_adapter.json").exists()
    res = cli("eval", tmp_path / "run", "--json")
    assert res.code == 0, res.err
    assert "accuracy" in json.loads(res.out)


def test_bad_adapter_options_are_recipe_errors(cli, write_recipe):
    recipe = write_recipe({
        "model": {"name": "tiny-bert"},
        "data": {"task": "classification", "train": "x.tsv"},
        "method": {"name": "adapter", "placement": "middle", "reduction_factr": 8},
    })
    res = cli("validate", recipe)
    assert res.code == 2
    assert "placement" in res.err and "reduction_factr" in res.err


def _sst2():
    from conftest import DATA

    return DATA / "sst2_train.tsv"
