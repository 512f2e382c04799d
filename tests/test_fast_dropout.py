"""train.fast_dropout: the bulk-drawn CPU dropout is dropout (keep probability 1-p, kept
values scaled by 1/(1-p), the gradient masked alike), reproducible from the torch seed, and
the loop swaps it in for every nn.Dropout of the model."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from llmtune.models.fast_dropout import FastDropout, bulk_dropout, use_fast_dropout

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_bulk_dropout_keeps_one_minus_p_and_rescales(p):
    torch.manual_seed(0)
    x = torch.ones(400_001, requires_grad=True)
    y = bulk_dropout(x, p)
    kept = y != 0
    values = y.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p))
    # 400k Bernoulli draws: the kept fraction is within 5 standard deviations of 1-p.
    sd = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sd
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask)/dx = mask
    torch.manual_seed(0)
    assert torch.equal(bulk_dropout(torch.ones(400_001), p), y.detach())  # same seed, same mask


def test_masks_of_neighbouring_elements_are_independent():
    torch.manual_seed(1)
    kept = (bulk_dropout(torch.ones(400_000), 0.5) != 0).float()
    for a, b in ((0, 1), (0, 3), (1, 2), (3, 4)):  # the four parts of one int64 draw, and across draws
        both = (kept[a::4][:99_999] * kept[b::4][:99_999]).mean().item()
        assert abs(both - 0.25) < 0.01, (a, b, both)


def test_loop_swaps_every_dropout_and_eval_mode_is_identity():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Sequential(nn.Dropout(0.2)), nn.Dropout(0.0))
    assert use_fast_dropout(model) == 2
    assert [type(m) for m in model.modules()].count(FastDropout) == 2
    model.eval()
    x = torch.randn(3, 4)
    assert torch.equal(model(x), model[0](x))


def _run(tmp_path, write_recipe, cli, name: str, fast: bool) -> tuple[dict, dict]:
    from test_resume import classification_recipe, tensors

    recipe = classification_recipe(tmp_path)
    recipe["train"].update({"epochs": 1, "fast_dropout": fast, "save_every": None, "eval_every": None})
    out = tmp_path / name
    res = cli("train", write_recipe(recipe, f"{name}.yaml"), "--output", out)
    assert res.code == 0, res.err
    return json.loads((out / "manifest.json").read_text()), tensors(out / "final")


def test_the_loop_uses_it_when_asked_and_it_replays_from_the_seed(tmp_path, write_recipe, cli):
    """tiny-bert full with dropout in the body and before the head: the switch swaps every
    dropout (the manifest counts them), the same seed gives the same weights, and the weights
    differ from torch's dropout (so the swap really reached the training step)."""
    manifest, first = _run(tmp_path, write_recipe, cli, "fast-a", True)
    _, again = _run(tmp_path, write_recipe, cli, "fast-b", True)
    plain_manifest, plain = _run(tmp_path, write_recipe, cli, "plain", False)
    assert manifest["speed_features"]["fast_dropout"] >= 3, manifest["speed_features"]
    assert plain_manifest["speed_features"]["fast_dropout"] == 0
    assert first.keys() == again.keys() == plain.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], plain[k]) for k in first)
