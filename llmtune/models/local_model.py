"""Whether a `model.name` that names a local path can be a model, said before anything loads:
`llmtune validate` and the loaders give the same message. No torch here."""

from __future__ import annotations

from pathlib import Path

from llmtune.models import builtin, gguf_cache, run_source

MODEL_FOLDER_HOLDS = ("config.json, the weights (model.safetensors, or its shards and "
                      "model.safetensors.index.json) and the tokenizer files (tokenizer.json, tokenizer_config.json)")
"""What `save_pretrained` writes, and so what a folder named as a model must hold."""


def looks_local(name: str) -> bool:
    """A path rather than a built-in name or a hub id (`org/model`)."""
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json")


def local_model_problem(name: str, *, tokenizer_only: bool = False) -> str | None:
    """Why the local path `name` cannot load as a model, or None (a built-in name, a hub id,
    a `.gguf` file, or a folder that looks like a model). `tokenizer_only`: only its tokenizer
    is wanted (a run's final/ holds one without a model when its method saved no body).
    Relative paths are taken from the current directory, as the loaders take them."""
    if builtin.is_builtin(name) or gguf_cache.is_gguf_name(name) or not looks_local(name):
        return None
    if run_source.is_run_dir(name):  # a finished run stands for its merged model (models/run_source.py)
        return None
    path = Path(name).expanduser()
    if not path.exists():
        return "no such folder; check the path (relative paths are taken from the current directory)"
    if not path.is_dir():
        return (f"{path} is a file, not a model folder; name the folder that holds it, or a .gguf file; "
                f"a model folder holds {MODEL_FOLDER_HOLDS}")
    wanted = ("config.json", "adapter_config.json") + (TOKENIZER_FILES if tokenizer_only else ())
    if any((path / file).is_file() for file in wanted):
        return None
    if (path / "final" / "llmtune.json").is_file():
        return (f"{path} looks like an llmtune run directory but has no recipe.yaml; name a finished run, or "
                f"`llmtune export --merge` it into a plain model folder")
    return f"{path} is not a model folder: it has no config.json; a model folder holds {MODEL_FOLDER_HOLDS}"
