"""Sentence embeddings for nearest-neighbour demonstration selection: an encoder's hidden
states, mean-pooled over real tokens and L2-normalised (cosine = dot product).

Kept here, small and self-contained, so in-context learning needs nothing else."""

from __future__ import annotations


def load_encoder(name: str, device):
    from llmtune.models.load import load_body, load_tokenizer

    tok = load_tokenizer(name)
    # "classification" asks load_body for the bare transformer (hidden states, no LM head).
    body = load_body(name, "classification")
    return tok, body.to(device).eval()


def embed_texts(tok, body, texts: list[str], *, batch_size: int, max_length: int, device):
    """(len(texts), hidden) float32 tensor, rows in the order of `texts`."""
    import torch
    from torch.nn import functional as F

    from llmtune.models.task_model import pool

    out = torch.empty((len(texts), body.config.hidden_size), dtype=torch.float32)
    # Sorted by length so that each batch pads little; rows go back to their places.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    tok.padding_side = "right"  # pool() expects real tokens first
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt").to(device)
            hidden = body(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            vecs = pool(hidden.float(), enc["attention_mask"], "mean")
            out[idx] = F.normalize(vecs, dim=-1).cpu()
    return out
