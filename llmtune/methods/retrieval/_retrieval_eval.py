"""Scoring a retrieval encoder on its recipe's queries, documents and judgments: the run's
final evaluation (the body as trained, in memory) and `llmtune eval` of a run or of the base
model (evaluate/retrieval.py does the ranking)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmtune.errors import UserError


def retrieval_encoder(tok, body, recipe, precision: str | None):
    """The Encoder a retrieval recipe embeds with: its pooling, normalised vectors, texts cut
    at data.max_length. `precision=None` keeps the body's device and dtype."""
    from llmtune.models.encoder import Encoder

    return Encoder(tok, body, pooling=recipe.model.pooling, normalize=True, max_length=recipe.data.max_length,
                   truncation_side=recipe.data.truncation_side, batch_size=recipe.eval.batch_size,
                   precision=precision)


def score_encoder(encoder, recipe, limit: int | None, reporter) -> dict[str, Any]:
    """Rank the collection for the eval queries; headline figures, counts and per_query."""
    from llmtune.data.retrieval import read_collection
    from llmtune.evaluate.retrieval import evaluate_encoder

    spec = recipe.data.retrieval
    collection = read_collection(recipe.data, limit or recipe.eval.limit)
    reporter.log(f"retrieval eval: {len(collection.queries)} queries, {len(collection.documents)} documents "
                 f"(windows of {spec.chunk_tokens} tokens, {spec.overlap} overlap)")
    was_training = encoder.body.training
    encoder.body.eval()  # no dropout while scoring, also mid-training
    try:
        result = evaluate_encoder(encoder, collection, chunk_tokens=spec.chunk_tokens, overlap=spec.overlap)
    finally:
        encoder.body.train(was_training)
    reporter.log(f"retrieval eval: nDCG@10 {result['ndcg@10']:.4f}, MAP@10 {result['map@10']:.4f}, recall@100 "
                 f"{result['recall@100']:.4f}, MRR {result['mrr']:.4f} over {result['queries']} judged queries")
    return {"split": "eval", **result, "collection": collection.fingerprint()}


def load_encoder(recipe, method, final_dir: Path | None):
    """(tokenizer, body): the base model, or a run's trained body with LoRA merged in."""
    from llmtune.models.load import load_body, load_tokenizer

    m = recipe.model
    source = method.body_source(m.name, final_dir) if final_dir is not None else m.name
    body = load_body(m.name, "retrieval", trust_remote_code=m.trust_remote_code, revision=m.revision,
                     dtype=m.dtype, source=None if source == m.name else source)
    if final_dir is not None:
        body = method.merge(method.load(body, final_dir, causal=False))
        return load_tokenizer(str(final_dir)), body
    return load_tokenizer(m.name, m.trust_remote_code, m.revision), body


def evaluate_saved(recipe, method, final_dir: Path | None, limit: int | None, reporter) -> dict[str, Any]:
    if recipe.data.retrieval is None:
        raise UserError("this retrieval recipe has no evaluation: add data.eval (the queries) and data.retrieval "
                        "(documents and qrels) to score it")
    tok, body = load_encoder(recipe, method, final_dir)
    return score_encoder(retrieval_encoder(tok, body, recipe, "auto"), recipe, limit, reporter)
