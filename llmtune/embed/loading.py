"""What `llmtune embed` runs: a model (built-in name, local folder, hub id) or a trained run.

A run directory is loaded the way `llmtune eval` loads it (base model + what the method
saved), then merged into plain weights when the method can merge (a LoRA run embeds as
fast as its base model). The run's pooling becomes the default. A sentence-transformers
folder (the built-in `minilm` is one) defaults to what its own pipeline does: the pooling
and normalisation its modules.json lists (embed/st_pipeline.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmtune.errors import UserError


@dataclass
class Loaded:
    tokenizer: object
    body: object
    """A transformers model (or a method's wrapper around one) that returns hidden states."""
    source: str
    """What was asked for, as given."""
    pooling: str | None = None
    """The run's pooling (classification runs); None for a plain model."""
    max_length: int | None = None
    """Default truncation length: a run's data.max_length; for a model, the longest input
    it was made for (sentence-transformers config, else the tokenizer/position limit)."""
    info: dict = field(default_factory=dict)
    normalize: bool | None = None
    """Whether the model's own pipeline normalises (a sentence-transformers folder's
    Normalize module); None when it does not say."""
    differs: list[str] = field(default_factory=list)
    """Modules of the model's own pipeline that llmtune does not run."""
    model: object = None
    """A run's whole TaskModel, its body being `body` (merged where the method merges) and
    its head the trained one; None for a plain model. `llmtune serve` classifies with it."""


def run_dir_of(source: str) -> Path | None:
    """The run directory `source` names (the run itself or its final/ folder), if any."""
    path = Path(source).expanduser()
    if (path / "recipe.yaml").is_file():
        return path
    if path.name == "final" and (path.parent / "recipe.yaml").is_file():
        return path.parent
    return None


def load_for_embedding(source: str, *, trust_remote_code: bool = False) -> Loaded:
    run = run_dir_of(source)
    if run is not None:
        return _load_run(run, source)
    from llmtune.embed.st_pipeline import read_pipeline
    from llmtune.models.load import load_body, load_tokenizer, resolve_source

    tok = load_tokenizer(source, trust_remote_code)
    # "classification" asks for the bare transformer: hidden states out, no LM head.
    body = load_body(source, "classification", trust_remote_code=trust_remote_code)
    loaded = Loaded(tok, body, source, max_length=_model_max_length(source, tok, body))
    pipeline = read_pipeline(Path(resolve_source(source)).expanduser())
    if pipeline is not None:  # a sentence-transformers folder: its own pooling and normalisation by default
        loaded.pooling, loaded.normalize, loaded.differs = pipeline.pooling, pipeline.normalize, pipeline.unsupported
    return loaded


def _load_run(run: Path, source: str) -> Loaded:
    from llmtune.runs.open import open_run

    target = open_run(run)
    info, method = target.info, target.method
    if method.trains_itself and info.get("task") not in ("classification", "retrieval"):
        raise UserError(f"{run}: this run's method ({info.get('method')}) saves no model that embeds text")
    model, tok = target.trained_model(), target.tokenizer()
    model.body = method.merge(model.body) if method.can_merge else model.body
    r = target.recipe
    pooling = info.get("pooling") or (r.model.pooling if r.data.task == "classification" else None)
    # The run's max_length: what the model saw in training.
    # A retrieval encoder trained on normalised vectors: its pipeline normalises.
    normalize = True if info.get("normalize") else None
    return Loaded(tok, model.body, source, pooling=pooling, info=info, max_length=r.data.max_length, model=model,
                  normalize=normalize)


def _model_max_length(name: str, tok, body) -> int:
    """sentence-transformers folders say how long their inputs were (MiniLM: 256, below
    its 512 positions); use that, else the smaller of the tokenizer and position limits."""
    from llmtune.models.load import resolve_source

    st_config = Path(resolve_source(name)).expanduser() / "sentence_bert_config.json"
    if st_config.is_file():
        try:
            value = json.loads(st_config.read_text()).get("max_seq_length")
        except (OSError, json.JSONDecodeError):
            value = None
        if isinstance(value, int) and value > 0:
            return value
    limits = [getattr(tok, "model_max_length", None), getattr(getattr(body, "config", None),
                                                               "max_position_embeddings", None)]
    limits = [x for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(limits) if limits else 512
