"""A trained retrieval encoder (a run of data.task retrieval) loaded from its final/ folder by
what plain transformers and peft read there: the whole body (full finetuning) or the base
model named in llmtune.json plus a peft adapter, merged. For the layers below the run
machinery (in-context learning's `eval.encoder`), which cannot open a run through its method."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmtune.errors import UserError
from llmtune.models.task_model import INFO_FILE


def saved_encoder_final(name: str) -> Path | None:
    """The final/ folder when `name` is a retrieval run (or its final/), else None."""
    path = Path(name).expanduser()
    final = path / "final" if (path / "recipe.yaml").is_file() else path
    info = final / INFO_FILE
    if not info.is_file() or json.loads(info.read_text()).get("task") != "retrieval":
        return None  # a model folder (an export's included): loaded as one
    if not (final / "config.json").is_file() and not (final / "adapter_config.json").is_file():
        raise UserError(f"{name}: its final/ holds neither a model nor an adapter; was the run finished?")
    return final


def load_saved_encoder(final: Path) -> tuple[Any, Any, str]:
    """(tokenizer, body, pooling) of a retrieval run's final/."""
    from llmtune.models.load import load_body, load_tokenizer

    info = json.loads((final / INFO_FILE).read_text())
    model = info.get("model") or {}
    if (final / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_body(info["base_model"], "retrieval", trust_remote_code=bool(model.get("trust_remote_code")),
                         revision=model.get("revision"))
        body = PeftModel.from_pretrained(base, str(final)).merge_and_unload()
    else:
        body = load_body(str(final), "retrieval", source=final)
    return load_tokenizer(str(final)), body, info.get("pooling") or "mean"
