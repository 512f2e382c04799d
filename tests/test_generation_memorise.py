"""Generation honours what every causal-LM method trained: trained and untrained
continuations differ, and a memorised sentence comes back from generate().

(adapter, ia3, prefix and soft-prompt have the same check in their own test files.)"""

from __future__ import annotations

import pytest
import torch
from tiny_lm import greedy, memorise, tiny_causal_lm

from llmtune.methods.registry import get_method
from llmtune.train.assemble import prepare_for_training

CASES = {
    "lora": ({"name": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear", "dropout": 0.0}, 2e-2),
    "lora-dora": ({"name": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear", "dropout": 0.0,
                   "dora": True}, 2e-2),
    "full": ({"name": "full"}, 3e-3),
    "frozen-head": ({"name": "frozen-head", "train_last_layers": 1}, 3e-2),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-gpt2"])
def test_generation_reproduces_a_memorised_sentence(case, arch):
    options, lr = CASES[case]
    method_cls = get_method(options["name"])
    model, tok = tiny_causal_lm(arch)
    torch.manual_seed(0)
    prepare_for_training(model, method_cls(method_cls.Config.model_validate(options)))
    ids = torch.tensor([tok("the quick brown fox jumps over the lazy dog")["input_ids"]])
    prompt, target = ids[:, :3], ids[0, 3:].tolist()
    model.eval()
    untrained = greedy(model.body, prompt, len(target))
    losses = memorise(model, ids, steps=100, lr=lr)
    trained = greedy(model.body, prompt, len(target))
    assert losses[-1] < 0.5 * losses[0]
    assert trained != untrained
    assert trained == target
