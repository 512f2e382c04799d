"""train.fused_forward for LoRA: the one-GEMM LoRA forward is peft's LoRA, value and gradient, with the
same dropout masks; the cases it does not cover run peft's own forward."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from llmtune.methods.peft_backed._fused_lora import use_fused_lora


def tiny_lora_model(**lora) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.2, target_modules="all-linear", **lora))
    for name, param in model.named_parameters():  # B starts at zero: make the update matter
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return model


def loss_and_grads(model, ids, seed=1):
    model.train()
    model.zero_grad()
    torch.manual_seed(seed)  # the same generator state: the same dropout masks
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_fused_forward_equals_peft_with_dropout_masks():
    plain = tiny_lora_model()
    fused = copy.deepcopy(plain)
    assert use_fused_lora(fused) == 14  # 7 linear layers x 2 blocks
    ids = torch.randint(0, 64, (3, 11))
    loss_p, grads_p = loss_and_grads(plain, ids)
    loss_f, grads_f = loss_and_grads(fused, ids)
    torch.testing.assert_close(loss_f, loss_p, rtol=1e-5, atol=1e-6)
    assert grads_f.keys() == grads_p.keys() and len(grads_p) == 28
    for name in grads_p:
        torch.testing.assert_close(grads_f[name], grads_p[name], rtol=1e-4, atol=1e-6, msg=name)
    # Dropout is really on and really the same: another seed gives another loss.
    assert not torch.allclose(loss_and_grads(fused, ids, seed=2)[0], loss_f)
    assert {type(m).__name__ for m in fused.modules() if hasattr(m, "lora_A")} == {"FusedLoraLinear"}
    assert fused.state_dict().keys() == plain.state_dict().keys()


def test_fused_forward_under_bf16_autocast_matches_peft():
    plain = tiny_lora_model()
    fused = copy.deepcopy(plain)
    use_fused_lora(fused)
    ids = torch.randint(0, 64, (2, 9))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_p, _ = loss_and_grads(plain, ids)
        loss_f, _ = loss_and_grads(fused, ids)
    torch.testing.assert_close(loss_f, loss_p, rtol=2e-2, atol=2e-2)


def test_disabled_merged_and_dora_layers_run_peft_forward():
    fused = tiny_lora_model()
    use_fused_lora(fused)
    plain = tiny_lora_model()
    ids = torch.randint(0, 64, (2, 7))
    fused.eval(), plain.eval()
    with torch.no_grad():
        with fused.disable_adapter(), plain.disable_adapter():
            torch.testing.assert_close(fused(input_ids=ids).logits, plain(input_ids=ids).logits)
        with_adapter = plain(input_ids=ids).logits
        fused.merge_adapter()
        torch.testing.assert_close(fused(input_ids=ids).logits, with_adapter, rtol=1e-4, atol=1e-5)
        fused.unmerge_adapter()
        torch.testing.assert_close(fused(input_ids=ids).logits, with_adapter, rtol=1e-5, atol=1e-6)

    dora_plain = tiny_lora_model(use_dora=True)
    dora_fused = copy.deepcopy(dora_plain)
    use_fused_lora(dora_fused)  # swapped, but every DoRA layer falls back to peft's forward
    loss_p, _ = loss_and_grads(dora_plain, ids)
    loss_f, _ = loss_and_grads(dora_fused, ids)
    torch.testing.assert_close(loss_f, loss_p)


@pytest.mark.parametrize("fused", [True, False])
def test_training_records_the_switch(tmp_path: Path, fused: bool):
    from llmtune.console import Reporter
    from llmtune.recipe import recipe_from_dict
    from llmtune.train.session import run_recipe

    recipe = {"model": {"name": "tiny-llama"},
              "data": {"task": "sft", "train": str(Path(__file__).parents[1] / "recipes/data/alpaca_tiny.json"),
                       "max_length": 64, "eval_fraction": 0.0},
              "method": {"name": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"},
              "train": {"max_steps": 2, "batch_size": 4, "fused_forward": fused, "save_every": None},
              "eval": {"generate": False}}
    out = tmp_path / "run"
    run_recipe(recipe_from_dict(recipe), Reporter(quiet=True), output=out)
    features = json.loads((out / "manifest.json").read_text())["speed_features"]
    assert (features["fused_forward"] > 0) is fused, features
