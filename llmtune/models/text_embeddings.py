"""Texts -> unit-length, mean-pooled embeddings by a named encoder, remembered on disk: what
`eval.selection: nearest` embeds the demonstration pool and the queries with. Built on the
one encoder (models/encoder.py, as `llmtune embed` runs it) and the one feature cache
(models/feature_cache.py, as the linear probe uses it)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from llmtune.models.feature_cache import cached_features, features_key, model_fingerprint
from llmtune.models.saved_encoder import load_saved_encoder, saved_encoder_final

if TYPE_CHECKING:
    import torch

    from llmtune.console import Reporter
    from llmtune.models.encoder import Encoder


def load_text_encoder(name: str, *, batch_size: int, max_length: int) -> Encoder:
    """The encoder `name` names: a model, or a retrieval run (its trained encoder, as
    `llmtune embed RUN` loads it)."""
    from llmtune.models.encoder import Encoder
    from llmtune.models.load import load_body, load_tokenizer

    final = saved_encoder_final(name)
    if final is not None:
        tok, body, _ = load_saved_encoder(final)
    else:  # "classification" asks load_body for the bare transformer (hidden states, no LM head)
        tok, body = load_tokenizer(name), load_body(name, "classification")
    return Encoder(tok, body, pooling="mean", normalize=True, max_length=max_length, batch_size=batch_size)


def cached_text_embeddings(name: str, groups: list[list[str]], *, batch_size: int, max_length: int,
                           reporter: Reporter | None = None) -> list[torch.Tensor]:
    """For each group of texts, a (len(texts), dim) float32 tensor of their embeddings, each
    group remembered on its own (the demonstration pool is embedded once, whatever the
    queries). The encoder is loaded once, and only on a miss."""
    import torch

    final = saved_encoder_final(name)  # a retrained run has new weight files there: embedded afresh
    fingerprint = model_fingerprint(str(final) if final is not None else name, None, "auto")
    encoder: Any = None
    out = []
    for texts in groups:
        digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()
        key = features_key(model=fingerprint, pooling="mean", normalized=True, max_length=max_length, texts=digest)

        def compute(texts: list[str] = texts) -> Any:
            nonlocal encoder
            if reporter is not None:
                reporter.log(f"embedding {len(texts)} texts with {name}")
            encoder = encoder or load_text_encoder(name, batch_size=batch_size, max_length=max_length)
            return encoder.embed(texts)

        array, _ = cached_features(key, len(texts), compute)
        out.append(torch.from_numpy(array))
    return out
