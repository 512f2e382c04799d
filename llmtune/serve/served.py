"""What one server serves: a run directory, a recipe (its base model) or a model name,
opened once at start-up, and the endpoints it can answer. Classification runs classify and
embed; base encoders embed; causal LMs generate (through the inference core)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtune.errors import UserError

if TYPE_CHECKING:
    from llmtune.models.encoder import Encoder
    from llmtune.serve.classify import Classifier

EMBEDDINGS, CLASSIFY, CHAT, COMPLETIONS = "/v1/embeddings", "/v1/classify", "/v1/chat/completions", "/v1/completions"

# Architectures that only encode: they serve embeddings, never generation.
ENCODER_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta",
                           "deberta-v2", "mpnet", "camembert", "modernbert"})


@dataclass
class Served:
    id: str
    """The model name clients send (`GET /v1/models` lists it)."""
    source: str
    endpoints: list[str]
    created: int = field(default_factory=lambda: int(time.time()))
    encoder: Encoder | None = None
    classifier: Classifier | None = None
    generator: Any = None
    """The inference core's handle for a causal LM."""
    details: dict = field(default_factory=dict)
    """What `GET /v1/models` says about it beyond OpenAI's fields (task, method, labels)."""


def open_served(source: str, *, name: str | None = None, trust_remote_code: bool = False, reporter=None) -> Served:
    from llmtune.embed.loading import run_dir_of

    path = Path(source).expanduser()
    run = run_dir_of(source)
    if run is not None:
        return _open_run(run, name or run.name, reporter)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from llmtune.recipe.load import load_recipe

        model = load_recipe(path, []).recipe.model
        return _open_model(model.name, name or model.name, model.trust_remote_code, reporter)
    return _open_model(source, name or source, trust_remote_code, reporter)


def _open_run(run: Path, model_id: str, reporter) -> Served:
    from llmtune.runs.open import open_run

    target = open_run(run)
    kind = target.method.result_kind(target.info.get("task") or target.recipe.data.task)
    if kind == "classifier":
        return _open_classifier(run, model_id, target, reporter)
    if kind == "reward":
        raise UserError(f"{run}: a reward model (one score per text); `llmtune serve` serves causal LMs, "
                        f"classification runs and encoders. Score with it through `llmtune eval {run}`")
    return _open_causal(str(run), model_id, reporter)


def _open_classifier(run: Path, model_id: str, target, reporter) -> Served:
    from llmtune.embed.loading import load_for_embedding
    from llmtune.embed.run import encoder_for
    from llmtune.serve.classify import Classifier

    loaded = load_for_embedding(str(run))
    encoder = encoder_for(loaded, reporter=reporter)
    labels = target.labels or []
    if loaded.model is None or not labels:
        raise UserError(f"{run}: final/llmtune.json lists no labels, so the run cannot classify; retrain it")
    r = target.recipe
    classifier = Classifier(loaded.model, loaded.tokenizer, labels, max_length=r.data.max_length,
                            truncation_side=r.data.truncation_side)
    details = {"task": "classification", "method": target.recipe.method.name, "labels": labels,
               "pooling": encoder.pooling, "max_length": encoder.max_length,
               "text_pair": bool(r.data.columns.text_pair)}
    return Served(model_id, str(run), [CLASSIFY, EMBEDDINGS], encoder=encoder, classifier=classifier, details=details)


def _open_model(name: str, model_id: str, trust_remote_code: bool, reporter) -> Served:
    if not _is_encoder(name, trust_remote_code):
        return _open_causal(name, model_id, reporter)
    from llmtune.embed.loading import load_for_embedding
    from llmtune.embed.run import encoder_for

    loaded = load_for_embedding(name, trust_remote_code=trust_remote_code)
    encoder = encoder_for(loaded, reporter=reporter)
    details = {"task": "embedding", "pooling": encoder.pooling, "normalize": encoder.normalize,
               "max_length": encoder.max_length, "dim": encoder.dim}
    return Served(model_id, name, [EMBEDDINGS], encoder=encoder, details=details)


def _is_encoder(name: str, trust_remote_code: bool) -> bool:
    from llmtune.models import builtin, gguf_cache

    if builtin.is_builtin(name):
        return name in ("minilm", "tiny-bert")
    if gguf_cache.is_gguf_name(name):
        return False
    from transformers import AutoConfig

    from llmtune.models.load import resolve_source

    try:
        config = AutoConfig.from_pretrained(resolve_source(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"{name}: not a run directory, recipe or model this machine can load ({exc}); pass a "
                        f"run directory, a recipe file, a built-in name or a local model folder") from None
    return config.model_type in ENCODER_TYPES


def _open_causal(source: str, model_id: str, reporter) -> Served:
    raise UserError(f"{source}: serving a causal LM needs the shared inference core, which is not in this "
                    f"build yet; serve a classification run or an encoder")
