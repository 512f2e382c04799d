"""`POST /v1/embeddings` (what `llmtune embed` computes, in OpenAI's shape) and
`POST /v1/classify` (labels and probabilities, scored as `llmtune eval` scores)."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from llmtune.serve.api_errors import bad_request
from llmtune.serve.schemas import MAX_INPUTS, ClassifyRequest, EmbeddingsRequest
from llmtune.serve.served import CLASSIFY, EMBEDDINGS

if TYPE_CHECKING:
    from llmtune.serve.context import Context


def texts_of(value, field: str) -> list[str]:
    """A str or a list of str as a non-empty list; token-id arrays are refused (the server
    tokenizes with the model's own tokenizer, as `llmtune embed` does)."""
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise bad_request(field, "is empty; send a text or a list of texts")
    if not all(isinstance(t, str) for t in texts):
        raise bad_request(field, "token-id arrays are not accepted; send text")
    if len(texts) > MAX_INPUTS:
        raise bad_request(field, f"{len(texts)} texts; at most {MAX_INPUTS} a request")
    return texts


def _vector(row, encoding: str):
    if encoding == "base64":  # what the openai client asks for by default: little-endian float32 bytes
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row.tolist()


async def embeddings(body: EmbeddingsRequest, ctx: Context) -> dict:
    from llmtune.serve.encode_jobs import EmbedJob

    ctx.check_model(body.model, EMBEDDINGS)
    texts = texts_of(body.input, "input")
    dim = ctx.served.encoder.dim
    if body.dimensions is not None and body.dimensions != dim:
        raise bad_request("dimensions", f"this model's vectors have {dim} dimensions and are not shortened; "
                                        f"leave dimensions out or send {dim}")
    vectors, tokens = await ctx.run("embed", EmbedJob(texts))
    data = [{"object": "embedding", "index": i, "embedding": _vector(row, body.encoding_format)}
            for i, row in enumerate(vectors)]
    return {"object": "list", "data": data, "model": ctx.served.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def classify(body: ClassifyRequest, ctx: Context) -> dict:
    from llmtune.serve.encode_jobs import ClassifyJob

    ctx.check_model(body.model, CLASSIFY)
    texts = texts_of(body.input, "input")
    pairs = None if body.text_pair is None else texts_of(body.text_pair, "text_pair")
    if pairs is not None and len(pairs) != len(texts):
        raise bad_request("text_pair", f"{len(pairs)} second texts for {len(texts)} inputs; send one per input")
    wants_pairs = ctx.served.details.get("text_pair")
    if wants_pairs and pairs is None:
        raise bad_request("text_pair", "this run was trained on text pairs; send a text_pair for every input")
    if not wants_pairs and pairs is not None:
        raise bad_request("text_pair", "this run was trained on single texts; leave text_pair out")
    scored, tokens = await ctx.run("classify", ClassifyJob(texts, pairs))
    data = [{"object": "classification", "index": i, "label": s.label, "probabilities": s.probabilities}
            for i, s in enumerate(scored)]
    return {"object": "list", "data": data, "model": ctx.served.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
