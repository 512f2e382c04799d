"""Load a tokenizer and a body (the transformer) for a task, from any model source."""

from __future__ import annotations

import os
from pathlib import Path

from llmtune.errors import UserError
from llmtune.models import builtin, gguf_cache, run_source
from llmtune.models.local_model import local_model_problem
from llmtune.models.precision import weights_dtype

CAUSAL_TASKS = frozenset({"causal_lm", "sft", "preference", "unpaired_preference", "prompts"})


def resolve_source(name: str) -> str:
    """A loadable path or hub id for `name` (built-in tiny models have none: they are built)."""
    if name == "minilm":
        return str(builtin.minilm_path())
    if gguf_cache.is_gguf_name(name):
        return str(gguf_cache.converted_folder(name))
    if run_source.is_run_dir(name):  # a finished run: its base with what it trained merged in
        return str(run_source.merged_source(name))
    return name


def hub_error(name: str, exc: Exception) -> UserError:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = (
        "HF_HUB_OFFLINE=1 is set, so only cached hub models load"
        if offline
        else "check the name, or point model.name at a local folder"
    )
    return UserError(f"model.name {name!r}: could not load it ({type(exc).__name__}: {exc}); {hint}; "
                     f"built-in names: {', '.join(builtin.BUILTIN_NAMES)}")


def _refuse_a_non_model_folder(name: str, *, tokenizer_only: bool = False) -> None:
    problem = local_model_problem(name, tokenizer_only=tokenizer_only)
    if problem is not None:
        raise UserError(f"model.name {name!r}: {problem}")


def load_tokenizer(name: str, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    if name in ("tiny-llama", "tiny-gpt2", "tiny-bert"):
        return builtin.load_tiny_tokenizer()
    _refuse_a_non_model_folder(name, tokenizer_only=True)
    source = resolve_source(name)
    try:
        tok = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as exc:
        raise hub_error(name, exc) from None
    if tok.pad_token is None:
        # Decoder tokenizers often ship without a pad token; padding positions are
        # masked out of attention and loss, so reusing EOS is safe.
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def model_config(name: str, trust_remote_code: bool = False, revision: str | None = None):
    """The transformers config of a model source (no weights loaded)."""
    from transformers import AutoConfig

    _refuse_a_non_model_folder(name)
    source = resolve_source(name)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as exc:
        raise hub_error(name, exc) from None


def load_body(name: str, task: str, *, trust_remote_code: bool = False, revision: str | None = None,
              dtype: str = "auto", source: str | Path | None = None):
    """The transformer for `task`: a causal LM for generation tasks, the bare encoder/decoder
    (hidden states out) for classification, where llmtune adds its own pooled head. Weights
    come in the dtype of the precision policy (models/precision.py): float32 unless `dtype`
    asks for bfloat16 or float16."""
    from transformers import AutoModel, AutoModelForCausalLM

    if source is None and name in ("tiny-llama", "tiny-gpt2", "tiny-bert"):
        return builtin.build_tiny(name, task).to(weights_dtype(dtype))
    if source is None:
        _refuse_a_non_model_folder(name)
    src = str(source) if source is not None else resolve_source(name)
    cls = AutoModelForCausalLM if task in CAUSAL_TASKS else AutoModel
    # Always a dtype: without one transformers 5 loads a checkpoint in the dtype it was saved in.
    kwargs = {"trust_remote_code": trust_remote_code, "revision": revision, "dtype": weights_dtype(dtype)}
    try:
        return cls.from_pretrained(src, **kwargs)
    except (OSError, ValueError) as exc:
        raise hub_error(name, exc) from None


def output_embedding_rows(name: str, body, ids: list[int], revision: str | None = None):
    """Rows `ids` of the causal LM's output layer (its `lm_head`), for a body loaded without
    it (the bare model a classification head sits on): the input embeddings when the model
    ties them to the output, else the checkpoint's own `lm_head.weight`."""
    import torch

    if getattr(body.config, "tie_word_embeddings", False):
        return body.get_input_embeddings().weight[ids].detach().clone()
    folder = Path(resolve_source(name)).expanduser()
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key.endswith("lm_head.weight"):
                    return f.get_tensor(key)[torch.tensor(ids)].clone()
    raise UserError(f"model.head_init label_words: model {name!r} has no output layer weights to start the head "
                    f"from (no lm_head in a local safetensors checkpoint); use head_init: random")
