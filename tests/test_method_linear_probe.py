"""The linear-probe method: a logistic regression on frozen, cached MiniLM features that
`llmtune eval` scores like any other classification run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def _gaussian_classes(n_per_class=60, dim=5, seed=0):
    """Three well-separated Gaussian classes on features of very different scales."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[4.0, 0, 0, 0, 0], [0, 4.0, 0, 0, 0], [0, 0, 4.0, 0, 0]])
    x = torch.cat([c + torch.randn(n_per_class, dim, generator=gen) for c in centres])
    scales = torch.tensor([1.0, 100.0, 0.01, 5.0, 1.0])
    offsets = torch.tensor([0.0, -300.0, 2.0, 0.0, 50.0])
    y = torch.arange(3).repeat_interleave(n_per_class)
    return x * scales + offsets, y, scales, offsets


def test_logistic_regression_reaches_the_optimum_on_raw_features():
    from torch.nn import functional as F

    from llmtune.methods.features._probe import fit_logistic_regression

    x, y, _, _ = _gaussian_classes()
    l2 = 1e-2
    weight, bias, info = fit_logistic_regression(x, y, 3, l2=l2, max_iter=500)
    assert info["converged"]
    assert weight.shape == (3, 5) and weight.dtype == torch.float32
    # The weights apply to raw features (the standardisation is folded in).
    assert ((x @ weight.T + bias).argmax(-1) == y).double().mean() > 0.97

    # Optimality: in standardised coordinates the gradient of the objective is ~0.
    xd = x.double()
    mean, scale = xd.mean(0), xd.std(0)
    w_std = (weight.double() * scale).requires_grad_(True)
    b_std = (bias.double() + weight.double() @ mean).requires_grad_(True)
    loss = F.cross_entropy(((xd - mean) / scale) @ w_std.T + b_std, y) + 0.5 * l2 * w_std.pow(2).sum()
    loss.backward()
    assert w_std.grad.abs().max() < 1e-4 and b_std.grad.abs().max() < 1e-4
    assert abs(loss.item() - info["loss"]) < 1e-5

    # A huge penalty leaves (almost) only the bias: every row gets the same prediction.
    weight, bias, _ = fit_logistic_regression(x, y, 3, l2=1e4, max_iter=500)
    assert (weight.double() * xd.std(0)).abs().max() < 1e-3


def test_linear_probe_only_trains_classification(cli, write_recipe):
    recipe = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "sft", "train": "data.json"},
        "method": {"name": "linear-probe"},
    })
    (recipe.parent / "data.json").write_text('[{"instruction": "hi", "output": "hello"}]')
    res = cli("validate", recipe)
    assert res.code == 2
    assert "linear-probe" in res.err and "classification" in res.err


def _sst2_recipe(write_recipe, tmp_path, n_train: int, n_eval: int):
    from conftest import DATA, tiny_sst2

    train = tiny_sst2(tmp_path, n_train)
    dev_lines = (DATA / "sst2_dev.tsv").read_text().splitlines()[: n_eval + 1]
    dev = tmp_path / "dev.tsv"
    dev.write_text("\n".join(dev_lines) + "\n")
    return write_recipe({
        "model": {"name": "minilm", "pooling": "mean"},
        "data": {"task": "classification", "train": str(train), "eval": str(dev),
                 "columns": {"text": "sentence", "label": "label"}, "labels": ["negative", "positive"],
                 "max_length": 64},
        "method": {"name": "linear-probe", "l2": 0.05},
        "eval": {"batch_size": 32},
    })


@pytest.mark.slow
def test_linear_probe_trains_above_chance_and_eval_reproduces_it(cli, write_recipe, tmp_path):
    recipe = _sst2_recipe(write_recipe, tmp_path, n_train=200, n_eval=120)
    run = tmp_path / "run"
    res = cli("train", recipe, "-o", run, "--json")
    assert res.code == 0, res.err
    trained = json.loads(res.out)
    accuracy = trained["eval"]["accuracy"]
    assert accuracy > 0.65, f"linear probe at {accuracy:.3f} on 120 dev sentences (chance is ~0.5)"
    assert trained["trainable_parameters"] == 2 * 384 + 2

    # final/ holds the head and a reference to the encoder, never the encoder's weights.
    final = run / "final"
    assert sorted(p.name for p in final.glob("*.safetensors")) == ["head.safetensors"]
    assert (final / "head.safetensors").stat().st_size < 10_000
    info = json.loads((final / "llmtune.json").read_text())
    assert info["base_model"] == "minilm" and info["encoder"]["name"] == "minilm"
    assert info["pooling"] == "mean" and info["labels"] == ["negative", "positive"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["eval_accuracy"] == accuracy
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["method"] == "linear-probe" and manifest["features"]["cached"] == {"train": False,
                                                                                          "eval": False}

    res = cli("eval", run, "--json")
    assert res.code == 0, res.err
    evaluated = json.loads(res.out)
    assert evaluated["examples"] == 120
    assert evaluated["accuracy"] == accuracy
    assert evaluated["confusion_matrix"] == trained["eval"]["confusion_matrix"]

    # A second run reads the features from the cache and fits the same head.
    res = cli("train", recipe, "-o", tmp_path / "again", "--json")
    assert res.code == 0, res.err
    again = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert again["features"]["cached"] == {"train": True, "eval": True}
    from safetensors.torch import load_file

    first = load_file(str(final / "head.safetensors"))
    second = load_file(str(tmp_path / "again" / "final" / "head.safetensors"))
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)

    # `llmtune embed RUN_DIR` embeds with the (unchanged) encoder, at the run's settings.
    src = tmp_path / "texts.txt"
    src.write_text("a charming journey\nstrictly routine\n")
    res = cli("embed", run, src, "--out", tmp_path / "run.npy", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["pooling"] == "mean" and doc["max_length"] == 64
    # (`embed minilm` alone follows MiniLM's sentence-transformers pipeline and normalises; a run does not.)
    res = cli("embed", "minilm", src, "--out", tmp_path / "base.npy", "--max-length", "64", "--no-normalize")
    assert res.code == 0, res.err
    np.testing.assert_allclose(np.load(tmp_path / "run.npy"), np.load(tmp_path / "base.npy"), atol=1e-6, rtol=0)

    # `export --merge` gives a plain transformers encoder (the base's) with the probe beside it.
    res = cli("export", run, "--out", tmp_path / "exported", "--merge", "--json")
    assert res.code == 0, res.err
    from transformers import AutoModel

    AutoModel.from_pretrained(str(tmp_path / "exported"))
    exported = load_file(str(tmp_path / "exported" / "head.safetensors"))
    for key in first:
        torch.testing.assert_close(exported[key], first[key], rtol=0, atol=0)
