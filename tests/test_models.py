"""Model sources, pooling, the classification head."""

from __future__ import annotations

import pytest
import torch

from llmtune.models.task_model import TaskModel, pool


def test_pooling_uses_real_tokens_only():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 3.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    assert pool(hidden, mask, "last").tolist() == [[3.0, 4.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 4.0]]


def test_tiny_models_are_deterministic():
    from llmtune.models.builtin import build_tiny

    a, b = build_tiny("tiny-llama", "sft"), build_tiny("tiny-llama", "sft")
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na


@pytest.mark.slow
def test_minilm_mean_pooling_matches_sentence_transformers():
    """The bundled encoder loads offline and the classifier body pools like sentence-transformers."""
    from sentence_transformers import SentenceTransformer

    from llmtune.models.builtin import minilm_path
    from llmtune.models.load import load_body, load_tokenizer

    tok = load_tokenizer("minilm")
    body = load_body("minilm", "classification").eval()
    texts = ["a charming and often affecting journey", "bleak"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ours = pool(body(**enc).last_hidden_state, enc["attention_mask"], "mean")
    # all-MiniLM-L6-v2's sentence-transformers pipeline ends in a Normalize module.
    ref = SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.allclose(torch.nn.functional.normalize(ours, dim=-1), ref, atol=1e-5)


def test_unknown_local_model_is_a_user_error(tmp_path):
    from llmtune.errors import UserError
    from llmtune.models.load import load_tokenizer

    with pytest.raises(UserError, match="no such folder"):
        load_tokenizer(str(tmp_path / "missing-model"))


def test_classification_head_shapes():
    from llmtune.models.builtin import build_tiny

    tm = TaskModel(build_tiny("tiny-bert", "classification"), "classification", num_labels=3)
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, logits = tm(ids, mask, torch.tensor([0, 2]))
    assert logits.shape == (2, 3) and loss.ndim == 0
