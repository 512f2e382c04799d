"""Helpers for method tests on tiny random causal LMs (imported by test modules)."""

from __future__ import annotations

import torch


def trained_scale(body) -> None:
    """Give a random tiny LM the weight scale of a trained one, in place (seeded).

    Built from a config, every matrix has std 0.02: activations inside a block are ~0.02
    wide and, after the final norm, the readout can move the logits by only about +-1.3.
    A method that trains only inside the body (adapters, IA3, LoRA on attention) then
    barely moves the loss whatever it learns, which says nothing about the method.
    Trained checkpoints keep activations of order one; matrices drawn with std
    1/sqrt(fan_in) do the same.
    """
    conv1d = {id(m.weight) for m in body.modules() if type(m).__name__ == "Conv1D"}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in body.parameters():
            if p.ndim == 2:
                # GPT-2's Conv1D stores its weight as (in, out), the transpose of nn.Linear.
                fan_in = p.shape[0] if id(p) in conv1d else p.shape[1]
                p.copy_(torch.randn(p.shape, generator=gen) * fan_in ** -0.5)


def tiny_causal_lm(name: str = "tiny-llama"):
    """(TaskModel for causal LM on a tiny base with trained-scale weights, tokenizer)."""
    from llmtune.models.builtin import build_tiny, load_tiny_tokenizer
    from llmtune.models.task_model import TaskModel

    body = build_tiny(name, "causal_lm")
    trained_scale(body)
    return TaskModel(body, "causal_lm"), load_tiny_tokenizer()


def memorise(model, ids: torch.Tensor, steps: int, lr: float) -> list[float]:
    """Train `model` (its trainable parameters) on one sequence with AdamW; the losses."""
    from llmtune.train.optim import build_optimizer

    optimizer = build_optimizer(model, lr, 0.0)
    mask = torch.ones_like(ids)
    model.eval()  # no dropout: a memorisation check, not a generalisation one
    losses = []
    for _ in range(steps):
        loss, _ = model(ids, mask, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@torch.no_grad()
def greedy(body, prompt: torch.Tensor, new_tokens: int) -> list[int]:
    """Greedy continuation through the body's own generate() (the path users take)."""
    out = body.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                        min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return out[0, prompt.shape[1]:].tolist()
