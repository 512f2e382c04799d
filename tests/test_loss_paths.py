"""Packing and the chunked loss change how the loss is computed, never its value: a packed
row's loss is the sum of its examples' losses, the chunked loss equals the full-logits loss,
and so do their gradients (float32, tight tolerance)."""

from __future__ import annotations

import pytest
import torch

from llmtune.data.batching import collate, loss_items
from llmtune.data.encode import IGNORE
from llmtune.data.packing import pack_examples
from llmtune.models.task_model import TaskModel
from tiny_lm import trained_scale

pytestmark = pytest.mark.usefixtures("one_thread")


def examples(n: int = 9, seed: int = 0) -> list[dict]:
    """SFT-like rows of 3..20 tokens, the first part of each unlabelled (a prompt)."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        k = int(torch.randint(3, 21, (1,), generator=gen))
        ids = torch.randint(5, 500, (k,), generator=gen).tolist()
        prompt = int(torch.randint(1, k - 1, (1,), generator=gen))
        rows.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return rows


def tiny_model(name: str, method: str | None = None) -> TaskModel:
    from llmtune.models.builtin import build_tiny

    body = build_tiny(name, "sft")
    trained_scale(body)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        body = get_peft_model(body, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    if method == "lora-head":  # the output layer itself wrapped: the checkpointed chunk path
        from peft import LoraConfig, get_peft_model

        body = get_peft_model(body, LoraConfig(r=4, lora_alpha=8, target_modules=["lm_head", "q_proj"]))
    if method == "soft-prompt":
        from llmtune.methods.prompts._soft_prompt_model import PromptEncoder, PromptedModel

        torch.manual_seed(0)
        body = PromptedModel(body, PromptEncoder(4, body.config.hidden_size))
    model = TaskModel(body, "sft")
    model.loss_reduction = "sum"
    return model.eval()


def loss_and_grads(model: TaskModel, rows: list[dict], *, chunked: bool):
    model.chunked_loss = chunked
    model.zero_grad(set_to_none=True)
    batch = collate(rows, pad_id=0)
    if "position_ids" in batch:
        loss, _ = model(batch["input_ids"], None, batch["labels"], batch["position_ids"])
    else:
        loss, _ = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, rel=1e-5):
    """Same loss, and each parameter's gradient the same up to float32 summation order
    (measured against the gradient's own size)."""
    (la, ga), (lb, gb) = a, b
    assert lb == pytest.approx(la.item(), rel=rel)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        diff = (ga[name] - gb[name]).norm()
        assert diff <= rel * ga[name].norm() + 1e-9, (name, diff, ga[name].norm())


@pytest.mark.parametrize("name,method", [("tiny-llama", None), ("tiny-llama", "lora"), ("tiny-gpt2", None),
                                         ("tiny-llama", "lora-head"), ("tiny-llama", "soft-prompt")])
def test_chunked_loss_equals_full_logits_loss(name, method, monkeypatch):
    import llmtune.models.chunked_loss as chunked

    monkeypatch.setattr(chunked, "LOGITS_PER_CHUNK", 7 * 512)  # several chunks even on this tiny batch
    model = tiny_model(name, method)
    rows = examples()
    assert_same(loss_and_grads(model, rows, chunked=False), loss_and_grads(model, rows, chunked=True))


def test_chunk_gradient_in_place_matches_autograd_on_extreme_logits():
    """The in-place softmax-minus-one-hot of one chunk: autograd's cross-entropy and its
    gradient, also for logits in the thousands (no overflow: the row maximum comes off first)."""
    from torch.nn import functional as F

    from llmtune.models.chunked_loss import _softmax_grad_

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(37, 301, generator=gen, dtype=torch.float64) * 3
    logits[0] *= 2000
    logits[1, 5] = 1e4
    targets = torch.randint(0, 301, (37,), generator=gen)
    targets[1] = 5
    want_logits = logits.clone().requires_grad_(True)
    want = F.cross_entropy(want_logits, targets, reduction="sum")
    want.backward()
    got = logits.clone()
    loss = _softmax_grad_(got, targets)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(want.item(), rel=1e-12)
    assert torch.allclose(got, want_logits.grad, atol=1e-12)


def test_chunked_loss_reuses_one_cpu_workspace_across_steps(monkeypatch):
    """One float32 chunk of logits is kept between steps on a CPU (a fresh logits tensor
    every step otherwise); reusing it changes no loss or gradient, step after step."""
    import llmtune.models.chunked_loss as chunked

    monkeypatch.setattr(chunked, "LOGITS_PER_CHUNK", 7 * 512)
    monkeypatch.setattr(chunked, "_WORKSPACES", {})
    model = tiny_model("tiny-llama")
    rows = examples()
    first = loss_and_grads(model, rows, chunked=True)
    (space,) = chunked._WORKSPACES.values()
    assert space.shape[0] == chunked.chunk_rows(model.body.config.vocab_size)
    space.fill_(float("nan"))  # what the last step left there must not matter
    assert_same(first, loss_and_grads(model, rows, chunked=True), rel=0)
    assert next(iter(chunked._WORKSPACES.values())) is space
    assert_same(loss_and_grads(model, rows, chunked=False), first)
    chunked.release_workspaces()
    assert not chunked._WORKSPACES
    assert_same(first, loss_and_grads(model, rows, chunked=True), rel=0)  # a new buffer, the same result


def test_a_training_run_hands_the_chunk_buffer_back(tmp_path, monkeypatch):
    """The loop releases the kept buffer when the run ends: a finished run holds no logits chunk."""
    import llmtune.models.chunked_loss as chunked
    from llmtune.console import Reporter
    from llmtune.recipe import recipe_from_dict
    from llmtune.train.session import run_recipe

    seen = []
    real = chunked._workspace
    monkeypatch.setattr(chunked, "_workspace", lambda *a: seen.append(1) or real(*a))
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join('{"instruction": "say %d", "output": "%d %d"}' % (i, i, i + 1) for i in range(8)))
    recipe = {"model": {"name": "tiny-llama"}, "data": {"task": "sft", "train": str(data), "eval_fraction": 0.0},
              "method": {"name": "full"}, "train": {"max_steps": 2, "batch_size": 4}, "eval": {"generate": False}}
    run_recipe(recipe_from_dict(recipe), Reporter(quiet=True), output=tmp_path / "run")
    assert seen  # the run went through the chunked loss
    assert not chunked._WORKSPACES


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("chunked", [False, True])
def test_packed_rows_give_the_unpacked_loss_and_gradient(name, chunked):
    model = tiny_model(name)
    rows = examples(12)
    packed = pack_examples(rows, capacity=32)
    assert len(packed) < len(rows) and max(r["examples"] for r in packed) >= 3
    assert sum(loss_items(r) for r in packed) == sum(loss_items(r) for r in rows)
    assert_same(loss_and_grads(model, rows, chunked=chunked), loss_and_grads(model, packed, chunked=chunked))


def test_packing_keeps_every_example_once_within_capacity():
    rows = examples(40, seed=1) + [{"input_ids": list(range(5, 45)), "labels": list(range(5, 45))}]
    packed = pack_examples(rows, capacity=24)
    assert all(len(r["input_ids"]) <= 24 for r in packed if r["examples"] > 1)
    assert sum(r["examples"] for r in packed) == len(rows)
    seen = []
    for r in packed:
        starts = [i for i, p in enumerate(r["position_ids"]) if p == 0] + [len(r["position_ids"])]
        assert r["position_ids"] == [p for a, b in zip(starts, starts[1:]) for p in range(b - a)]
        for n, (a, b) in enumerate(zip(starts, starts[1:])):
            seen.append(tuple(r["input_ids"][a:b]))
            if n:  # never scored on predicting an example's first token from the previous one
                assert r["labels"][a] == IGNORE
    assert sorted(seen) == sorted(tuple(r["input_ids"]) for r in rows)
    assert pack_examples(rows, capacity=24) == packed  # deterministic


def test_preflight_refuses_packing_when_attention_leaks_across_examples(monkeypatch):
    """An attention implementation that ignores the document boundaries is caught before
    training (simulated: transformers told that no row is packed)."""
    import transformers.masking_utils as masking

    from llmtune.errors import UserError
    from llmtune.train.preflight import run_preflight

    model = tiny_model("tiny-llama")
    model.chunked_loss = True
    packed = pack_examples(examples(12), capacity=32)
    run_preflight(model, packed, 0, torch.device("cpu"), packing=True)  # the real thing passes
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    with pytest.raises(UserError, match="lets packed examples see each other"):
        run_preflight(model, packed, 0, torch.device("cpu"), packing=True)
