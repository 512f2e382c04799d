"""Sentence embeddings for nearest-neighbour demonstration selection: an encoder's hidden
states, mean-pooled over real tokens and L2-normalised (cosine = dot product).

Kept here, small and self-contained, so in-context learning needs nothing else."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def load_encoder(name: str, device):
    from llmtune.models.load import load_body, load_tokenizer
    from llmtune.models.saved_encoder import load_saved_encoder, saved_encoder_final

    final = saved_encoder_final(name)
    if final is not None:  # a retrieval run (method contrastive): mean-pooled and normalised, as here
        tok, body, _ = load_saved_encoder(final)
        return tok, body.to(device).eval()
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


def _encoder_fingerprint(name: str) -> str:
    """Name plus the size and time of a local encoder's files, so a retrained folder at the
    same path is embedded afresh."""
    from llmtune.models.load import resolve_source

    try:
        source = Path(resolve_source(name))
    except Exception:  # e.g. the bundled encoder is missing: loading will say so
        return name
    if not source.is_dir():
        return name
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in source.iterdir() if p.is_file())
    return f"{name}:{stats}"


def cached_embeddings(name: str, groups: list[list[str]], *, batch_size: int, max_length: int, device,
                      reporter=None) -> list:
    """embed_texts for each group of texts, remembered on disk per group (so the demonstration
    pool is embedded once, whatever the queries): re-running with another template, k or
    --limit embeds nothing again. The encoder is loaded once, and only on a miss."""
    from safetensors.torch import load_file, save_file

    from llmtune.data.cache import cache_dir, cache_key

    fingerprint = _encoder_fingerprint(name)
    encoder = None
    out = []
    for texts in groups:
        digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
        key = cache_key(kind="embeddings", encoder=fingerprint, max_length=max_length, texts=digest)
        path = cache_dir().parent / "embeddings" / f"{key}.safetensors"
        vecs = None
        if path.exists():
            try:
                vecs = load_file(str(path))["embeddings"]
            except Exception:  # a damaged entry is rebuilt, never trusted
                vecs = None
        if vecs is None or vecs.shape[0] != len(texts):
            if reporter is not None:
                reporter.log(f"embedding {len(texts)} texts with {name}")
            encoder = encoder or load_encoder(name, device)
            vecs = embed_texts(*encoder, texts, batch_size=batch_size, max_length=max_length, device=device)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            save_file({"embeddings": vecs.contiguous()}, str(tmp))
            os.replace(tmp, path)  # atomic: a reader sees the whole file or none
        out.append(vecs)
    return out
