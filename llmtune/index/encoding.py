"""The store's embedding model: `llmtune embed`'s loader and `Encoder` (same pooling,
length-sorted batches, normalisation), plus the chunker on the same tokenizer.

Chunks are embedded from the token ids the chunker cut (wrapped in the model's special
tokens), so a document is tokenized once; queries are tokenized as `llmtune embed` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtune.errors import UserError
from llmtune.data.chunking import Chunker, Piece, special_tokens
from llmtune.index.settings import StoreSettings, canonical_model

BATCH_TOKENS = 1024
"""Tokens per forward pass while indexing (rows x padded width; `--batch-size` caps the rows):
a pass's activation memory grows with its tokens, and a big file's peak memory is the store's
plus one pass's. MiniLM at 32 rows of 130 tokens added about 290 MiB over the loaded model, at
8 rows about 150 MiB, no slower (docs/indexing.md, "One big file"); short texts still go 32
at a time."""


@dataclass
class IndexEncoder:
    encoder: object
    """llmtune.models.encoder.Encoder"""
    chunker: Chunker
    prefix: list[int]
    suffix: list[int]
    settings: StoreSettings

    def embed_pieces(self, pieces: list[Piece], on_batch=None):
        """(len(pieces), dim) float32 numpy array; `on_batch(indices)` after each forward batch."""
        return self.encoder.embed_ids([self.prefix + p.ids + self.suffix for p in pieces], on_batch).numpy()

    def embed_queries(self, texts: list[str]):
        return self.encoder.embed(list(texts))


def load_index_encoder(model: str, *, pooling: str | None = None, chunk_tokens: int, overlap: int,
                       max_length: int | None = None, batch_size: int = 32, index: dict | None = None,
                       analyzer: dict | None = None, bm25: dict | None = None,
                       trust_remote_code: bool = False, batch_tokens: int | None = BATCH_TOKENS) -> IndexEncoder:
    """The encoder for a store. `max_length` None: the model's own limit (a new store);
    `analyzer`/`bm25` None: the defaults (a new store)."""
    from llmtune.models.encoder import Encoder
    from llmtune.embed.loading import load_for_embedding

    loaded = load_for_embedding(model, trust_remote_code=trust_remote_code)
    _check_retrieval_encoder(model, loaded.info)
    pooling = pooling or loaded.pooling or "mean"
    max_length = max_length or loaded.max_length or 512
    encoder = Encoder(loaded.tokenizer, loaded.body, pooling=pooling, normalize=True, max_length=max_length,
                      batch_size=batch_size, batch_tokens=batch_tokens)
    prefix, suffix = special_tokens(loaded.tokenizer)
    if chunk_tokens + len(prefix) + len(suffix) > max_length:
        raise UserError(f"--chunk-tokens {chunk_tokens}: {model} reads at most {max_length} tokens per text, "
                        f"{len(prefix) + len(suffix)} of them special; use --chunk-tokens "
                        f"{max_length - len(prefix) - len(suffix)} or fewer")
    settings = StoreSettings(model=canonical_model(model), pooling=pooling, normalize=True, max_length=max_length,
                             chunk_tokens=chunk_tokens, overlap=overlap, dim=encoder.dim)
    settings.encoder = encoder_fingerprint(model)
    if index is not None:
        settings.index = dict(index)
    if analyzer is not None:
        settings.analyzer = dict(analyzer)
    if bm25 is not None:
        settings.bm25 = dict(bm25)
    return IndexEncoder(encoder, Chunker(loaded.tokenizer, chunk_tokens, overlap), prefix, suffix, settings)


def encoder_for(settings: StoreSettings, **kw) -> IndexEncoder:
    """The encoder that built an existing store; a run retrained since is refused (its
    vectors would no longer match the stored ones)."""
    if settings.encoder and encoder_fingerprint(settings.model) != settings.encoder:
        raise UserError(f"{settings.model}: this run's final/ changed since the store was built with it (retrained "
                        f"or overwritten), so its query vectors no longer match the stored chunks; index the "
                        f"documents into a new store with `llmtune index ... --encoder {settings.model}`")
    return load_index_encoder(settings.model, pooling=settings.pooling, chunk_tokens=settings.chunk_tokens,
                              overlap=settings.overlap, max_length=settings.max_length, index=settings.index,
                              analyzer=settings.analyzer, bm25=settings.bm25, **kw)


RETRIEVAL_ENCODER = ("a retrieval encoder maps queries and passages into one vector space, where a question lands "
                     "near the passages that answer it: a sentence-embedding model (minilm, a sentence-transformers "
                     "folder or hub id) or a run trained with data.task retrieval (method contrastive, e.g. "
                     "recipes/cranfield-contrastive.yaml)")


def _check_retrieval_encoder(model: str, info: dict) -> None:
    """A run given as the encoder must be a retrieval run: a classifier's body learnt to tell
    labels apart, not to match questions with passages, so its neighbours mean little."""
    task = info.get("task")
    if task is not None and task != "retrieval":
        raise UserError(f"{model}: this run trained a {task} model (method {info.get('method')}), not a retrieval "
                        f"encoder; {RETRIEVAL_ENCODER}. Index with such a model, or train one first")


def encoder_fingerprint(model: str) -> str:
    """A run's final/ as it is now (file names, sizes and modification times), so a store can
    tell that the run it was built with has been retrained; "" for anything that is not a run."""
    import hashlib

    from llmtune.embed.loading import run_dir_of

    run = run_dir_of(model)
    if run is None or not (run / "final").is_dir():
        return ""
    digest = hashlib.sha256()
    for path in sorted((run / "final").rglob("*")):
        if path.is_file():
            st = path.stat()
            digest.update(f"{path.relative_to(run)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
