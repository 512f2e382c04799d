"""What a sentence-transformers folder's own pipeline does by default, read from its
modules.json, so that `llmtune embed FOLDER` gives what `SentenceTransformer(FOLDER).encode`
gives: the Pooling module's mode and whether a Normalize module follows it. (The input
length, `max_seq_length` in sentence_bert_config.json, is read in embed/loading.py.)

Modules llmtune does not run (Dense projections, weighted or sqrt-length mean pooling) are
named in `unsupported`, so the caller can say that the output will differ."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from llmtune.errors import UserError

MODULES_FILE = "modules.json"
# sentence-transformers' Pooling config keys -> llmtune's pooling names
_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
          "pooling_mode_lasttoken": "last"}
_UNSUPPORTED_MODES = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")
_RUN_AS_IS = ("Transformer", "Pooling", "Normalize")


@dataclass
class Pipeline:
    pooling: str | None = None
    """llmtune's name for the Pooling module's mode (None: no Pooling module, or one llmtune lacks)."""
    normalize: bool = False
    """A Normalize module follows the pooling (unit-length vectors)."""
    unsupported: list[str] = field(default_factory=list)
    """Modules or modes llmtune does not run, as `path (what)`."""


def read_pipeline(folder: Path) -> Pipeline | None:
    """The default pipeline of a sentence-transformers folder; None for any other folder."""
    folder = Path(folder)
    modules_file = folder / MODULES_FILE
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise UserError(f"{modules_file}: expected a list of modules, as sentence-transformers writes it")
    pipeline = Pipeline()
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1] if isinstance(module, dict) else ""
        path = module.get("path", "") if isinstance(module, dict) else ""
        if kind == "Pooling":
            _read_pooling(folder / path / "config.json", pipeline)
        elif kind == "Normalize":
            pipeline.normalize = True
        elif kind not in _RUN_AS_IS:
            pipeline.unsupported.append(f"{path or kind} ({kind or 'unknown module'})")
    return pipeline


def _read_pooling(config_file: Path, pipeline: Pipeline) -> None:
    config = _read_json(config_file)
    modes = [name for key, name in _MODES.items() if config.get(key)]
    odd = [key for key in _UNSUPPORTED_MODES if config.get(key)]
    if len(modes) == 1 and not odd:
        pipeline.pooling = modes[0]
    else:  # several modes are concatenated by sentence-transformers; llmtune pools one way
        pipeline.unsupported.append(f"{config_file.parent.name} (pooling {', '.join(modes + odd) or 'none'})")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable sentence-transformers config ({exc})") from None
