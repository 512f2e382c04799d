"""End to end through the CLI: train, metrics, checkpoints, final/ that loads without llmtune."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DATA, tiny_sst2


def _sft_recipe(tmp_path, **train):
    return {
        "model": {"name": "tiny-llama"},
        "data": {"task": "sft", "train": str(DATA / "alpaca_tiny.json"), "eval_fraction": 0.125, "max_length": 64},
        "method": {"name": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"},
        "train": {"max_steps": 6, "batch_size": 4, "lr": 3e-3, "log_every": 2, "save_every": 3, **train},
        "output": {"dir": str(tmp_path / "run")},
    }


def test_tiny_llama_sft_lora_end_to_end(cli, write_recipe, tmp_path):
    res = cli("train", write_recipe(_sft_recipe(tmp_path)), "--json")
    assert res.code == 0, res.err
    result = json.loads(res.out)
    run = tmp_path / "run"
    assert result["steps"] == 6 and result["eval"]["perplexity"] > 1
    records = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == [2, 4, 6]
    assert all(r["tokens_per_s"] > 0 and r["lr"] >= 0 for r in records if "loss" in r)
    assert any("eval_loss" in r for r in records)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-3", "step-6"]
    for name in ("trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"):
        assert (run / "checkpoints" / "step-6" / name).exists()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["trainable_parameters"] == result["trainable_parameters"] > 0
    assert {"versions", "data_fingerprint", "tokenizer_hash", "seed", "hardware"} <= set(manifest)
    final = run / "final"
    assert (final / "adapter_model.safetensors").exists() and not (final / "model.safetensors").exists()

    # final/ loads with plain peft onto the same base, and matches what llmtune evaluates.
    from peft import PeftModel
    from transformers import AutoTokenizer

    from llmtune.runs.open import open_run
    from llmtune.models.builtin import build_tiny

    plain = PeftModel.from_pretrained(build_tiny("tiny-llama", "sft"), str(final)).eval()
    tok = AutoTokenizer.from_pretrained(str(final))
    ours = open_run(run).trained_model()
    ids = tok("### Instruction:\nName a fruit.", return_tensors="pt")
    with torch.inference_mode():
        a = plain(**ids).logits
        b = ours.eval()(ids["input_ids"], ids["attention_mask"])[1]
        base = build_tiny("tiny-llama", "sft")(**ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, base, atol=1e-4)  # the adapter is really applied

    res = cli("eval", run, "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["loss"] == pytest.approx(result["eval"]["loss"], rel=1e-5)
    assert (run / "eval.json").exists()


def test_full_finetune_tiny_bert_saves_plain_transformers_folder(cli, write_recipe, tmp_path):
    recipe = {
        "model": {"name": "tiny-bert", "pooling": "cls"},
        "data": {"task": "classification", "train": str(tiny_sst2(tmp_path, 48)), "eval_fraction": 0.25,
                 "columns": {"text": "sentence"}, "max_length": 32},
        "method": {"name": "full"},
        "train": {"max_steps": 4, "batch_size": 8, "lr": 1e-3},
        "output": {"dir": str(tmp_path / "run")},
    }
    res = cli("train", write_recipe(recipe), "--json")
    assert res.code == 0, res.err
    final = tmp_path / "run" / "final"
    from safetensors.torch import load_file
    from transformers import AutoModel

    body = AutoModel.from_pretrained(str(final))  # plain transformers, no llmtune
    head = load_file(str(final / "head.safetensors"))
    assert head["weight"].shape == (2, body.config.hidden_size)
    info = json.loads((final / "llmtune.json").read_text())
    assert info["labels"] == ["0", "1"] and info["pooling"] == "cls"


@pytest.mark.slow
def test_minilm_lora_classifier_reloads_with_plain_peft(cli, write_recipe, tmp_path):
    """The quickstart's shape at a few steps: LoRA + mean-pooled head on the real MiniLM."""
    recipe = {
        "model": {"name": "minilm"},
        "data": {"task": "classification", "train": str(tiny_sst2(tmp_path, 256)),
                 "eval": {"path": str(DATA / "sst2_dev.tsv"), "limit": 64},
                 "columns": {"text": "sentence"}, "labels": ["negative", "positive"], "max_length": 48},
        "method": {"name": "lora", "r": 8, "alpha": 16, "target_modules": ["query", "value"]},
        # 32 steps: at 24 the 64-sentence check sat at the threshold (0.61 with torch's dropout
        # masks, 0.58 with the bulk ones, 0.75-0.78 on seed 1); at 32 it reads 0.70.
        "train": {"max_steps": 32, "batch_size": 16, "lr": 3e-3, "warmup_ratio": 0.1},
        "output": {"dir": str(tmp_path / "run")},
    }
    res = cli("train", write_recipe(recipe), "--json")
    assert res.code == 0, res.err
    acc = json.loads(res.out)["eval"]["accuracy"]
    assert acc > 0.6  # 32 steps of LoRA on a real encoder already beat chance clearly

    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from llmtune.models.builtin import minilm_path

    final = tmp_path / "run" / "final"
    body = PeftModel.from_pretrained(AutoModel.from_pretrained(str(minilm_path())), str(final)).eval()
    head = load_file(str(final / "head.safetensors"))
    tok = AutoTokenizer.from_pretrained(str(final))
    lines = (DATA / "sst2_dev.tsv").read_text().splitlines()[1:65]
    texts, golds = [l.split("\t")[0] for l in lines], [int(l.split("\t")[1]) for l in lines]
    enc = tok(texts, padding=True, truncation=True, max_length=48, return_tensors="pt")
    with torch.inference_mode():
        hidden = body(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * m).sum(1) / m.sum(1)
        preds = (pooled @ head["weight"].T + head["bias"]).argmax(-1).tolist()
    plain_acc = sum(p == g for p, g in zip(preds, golds)) / len(golds)
    assert plain_acc == pytest.approx(acc)
