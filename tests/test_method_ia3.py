"""IA3 through peft: per-architecture defaults on the bodies llmtune uses (a bare encoder for
classification, causal LMs), identity at start, merge, generation, option errors."""

from __future__ import annotations

import pytest
import torch

from llmtune.errors import UserError
from tiny_lm import greedy, memorise, tiny_causal_lm
from llmtune.train.assemble import prepare_for_training

# name -> (task, module-name endings peft's default must scale)
DEFAULTS = {
    "tiny-bert": ("classification", {"attention.self.key", "attention.self.value", "attention.output.dense",
                                     "output.dense"}),
    "tiny-llama": ("causal_lm", {"self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"}),
    "tiny-gpt2": ("causal_lm", {"attn.c_attn", "mlp.c_proj"}),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _method(**opts):
    from llmtune.methods.registry import get_method

    cls = get_method("ia3")
    return cls(cls.Config(name="ia3", **opts))


def _task_model(arch: str):
    from llmtune.models.builtin import build_tiny
    from llmtune.models.task_model import TaskModel

    task = DEFAULTS[arch][0]
    body = build_tiny(arch, task)
    if task == "classification":
        return TaskModel(body, task, num_labels=2, head_dropout=0.0)
    return TaskModel(body, task)


def _inputs():
    ids = torch.tensor([[5, 17, 300, 41, 9, 77, 2], [8, 120, 33, 64, 0, 0, 0]])
    return ids, torch.tensor([[1] * 7, [1] * 4 + [0] * 3])


def _scaled_modules(model) -> set[str]:
    names = {n.rsplit(".ia3_l", 1)[0] for n, p in model.named_parameters() if ".ia3_l." in n}
    return {n.split("layer.0.", 1)[-1].split("layers.0.", 1)[-1].split("h.0.", 1)[-1]
            for n in names if any(k in n for k in ("layer.0.", "layers.0.", "h.0."))}


@pytest.mark.parametrize("arch", list(DEFAULTS))
def test_peft_defaults_fit_each_body_and_start_as_identity(arch):
    model = _task_model(arch).eval()
    ids, mask = _inputs()
    with torch.no_grad():
        before = model(ids, mask)[1]
    prepare_for_training(model, _method())
    with torch.no_grad():
        after = model(ids, mask)[1]
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    assert _scaled_modules(model) == DEFAULTS[arch][1]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".ia3_l." in n or n.startswith("head.") for n in trainable)
    if model.head is not None:
        assert {"head.weight", "head.bias"} <= trainable


def test_merge_gives_the_same_outputs_as_the_adapted_model():
    model = _task_model("tiny-bert")
    method = _method()
    prepare_for_training(model, method)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".ia3_l." in n:
                p.mul_(1 + 0.5 * torch.randn_like(p))  # as if trained
    model.eval()
    ids, mask = _inputs()
    with torch.no_grad():
        adapted = model(ids, mask)[1]
    model.body = method.merge(model.body)
    assert not any(".ia3_l." in n for n, _ in model.named_parameters())
    assert type(model.body).__name__ == "BertModel"
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask)[1], adapted, rtol=0, atol=1e-5)


def test_custom_targets_without_feedforward_modules():
    model = _task_model("tiny-llama")
    prepare_for_training(model, _method(target_modules=["q_proj", "v_proj"]))
    assert _scaled_modules(model) == {"self_attn.q_proj", "self_attn.v_proj"}


def test_feedforward_modules_outside_the_targets_is_a_user_error():
    model = _task_model("tiny-llama")
    with pytest.raises(UserError, match="feedforward_modules"):
        prepare_for_training(model, _method(target_modules=["q_proj"], feedforward_modules=["down_proj"]))


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-gpt2"])
def test_generation_uses_the_trained_vectors_and_memorises(arch):
    model, tok = tiny_causal_lm(arch)
    torch.manual_seed(0)
    prepare_for_training(model, _method())
    ids = torch.tensor([tok("the quick brown fox jumps over the lazy dog")["input_ids"]])
    prompt, target = ids[:, :3], ids[0, 3:].tolist()
    model.eval()
    untrained = greedy(model.body, prompt, len(target))
    losses = memorise(model, ids, steps=100, lr=1e-1)
    trained = greedy(model.body, prompt, len(target))
    assert losses[-1] < 0.5 * losses[0]
    assert trained != untrained
    assert trained == target
