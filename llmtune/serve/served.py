"""What one server serves: a run directory, an export folder, a recipe (its base model) or a
model name, opened once at start-up through runs/inference.identify, and the endpoints it
answers. Classification runs classify and embed; encoders embed; causal LMs generate
(through the shared generation core, prompted the way the run trained)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmtune.errors import UserError

if TYPE_CHECKING:
    from llmtune.models.encoder import Encoder
    from llmtune.runs.inference import InferenceModel, Source
    from llmtune.serve.classify import Classifier

EMBEDDINGS, CLASSIFY, CHAT, COMPLETIONS = "/v1/embeddings", "/v1/classify", "/v1/chat/completions", "/v1/completions"


@dataclass
class Served:
    id: str
    """The model name clients send (`GET /v1/models` lists it)."""
    source: str
    endpoints: list[str]
    created: int = field(default_factory=lambda: int(time.time()))
    encoder: Encoder | None = None
    classifier: Classifier | None = None
    generator: InferenceModel | None = None
    details: dict = field(default_factory=dict)
    """What `GET /v1/models` says about it beyond OpenAI's fields (task, method, labels, context)."""


def open_served(source: str, *, name: str | None = None, trust_remote_code: bool = False, reporter=None) -> Served:
    from llmtune.runs.inference import identify
    from llmtune.runs.open import CAUSAL_LM, CLASSIFICATION, ENCODER

    what = identify(source)
    model_id = name or _default_id(what)
    if what.kind == CAUSAL_LM:
        return _open_causal(source, model_id, trust_remote_code, reporter)
    if what.kind == CLASSIFICATION and what.target is not None and what.target.final is not None:
        return _open_classifier(what.target, model_id, reporter)
    if what.kind == ENCODER:  # a model, a recipe's base model, or a run that trained an encoder
        t = what.target
        model = what.model if t is None else str(t.run_dir) if t.final is not None else t.recipe.model.name
        return _open_encoder(model, model_id, trust_remote_code, reporter)
    raise UserError(f"{source}: holds a {what.kind}; `llmtune serve` serves causal LMs (chat, completions), "
                    f"classification runs (classify, embeddings) and encoders (embeddings)"
                    + (f"; serve the run directory the export came from" if what.kind == CLASSIFICATION else ""))


def _default_id(what: Source) -> str:
    if what.target is not None and what.target.run_dir is not None:
        return what.target.run_dir.name
    if what.target is not None:
        return what.target.recipe.model.name
    path = Path(what.arg)
    return path.name if path.is_dir() else what.arg


def _open_classifier(target, model_id: str, reporter) -> Served:
    from llmtune.embed.loading import load_for_embedding
    from llmtune.embed.run import encoder_for
    from llmtune.serve.classify import Classifier

    run = target.run_dir
    loaded = load_for_embedding(str(run))
    encoder = encoder_for(loaded, reporter=reporter)
    labels = target.labels or []
    if loaded.model is None or not labels:
        raise UserError(f"{run}: final/llmtune.json lists no labels, so the run cannot classify; retrain it")
    r = target.recipe
    classifier = Classifier(loaded.model, loaded.tokenizer, labels, max_length=r.data.max_length,
                            truncation_side=r.data.truncation_side)
    details = {"task": "classification", "method": r.method.name, "labels": labels, "pooling": encoder.pooling,
               "max_length": encoder.max_length, "text_pair": bool(r.data.columns.text_pair)}
    return Served(model_id, str(run), [CLASSIFY, EMBEDDINGS], encoder=encoder, classifier=classifier, details=details)


def _open_encoder(name: str, model_id: str, trust_remote_code: bool, reporter) -> Served:
    from llmtune.embed.loading import load_for_embedding
    from llmtune.embed.run import encoder_for

    loaded = load_for_embedding(name, trust_remote_code=trust_remote_code)
    encoder = encoder_for(loaded, reporter=reporter)
    details = {"task": "embedding", "pooling": encoder.pooling, "normalize": encoder.normalize,
               "max_length": encoder.max_length, "dim": encoder.dim}
    return Served(model_id, name, [EMBEDDINGS], encoder=encoder, details=details)


def _open_causal(source: str, model_id: str, trust_remote_code: bool, reporter) -> Served:
    from llmtune.runs.inference import open_causal_lm

    model = open_causal_lm(source, verb="serve", reporter=reporter, trust_remote_code=trust_remote_code)
    if reporter is not None:
        reporter.log(model.describe())
    details = {"task": "generation", "method": model.method, "prompt_format": model.prompt_format.style,
               "context_length": model.context_length}
    return Served(model_id, source, [CHAT, COMPLETIONS], generator=model, details=details)
