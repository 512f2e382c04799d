"""Models for the preference/RL methods: the policy (a causal LM), a reward model (a
sequence classifier with one score), their frozen references, and loading what a run saved.

Imported only inside fit/evaluate (it imports torch and transformers)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from llmtune.errors import UserError
from llmtune.models import builtin
from llmtune.models.load import hub_error, load_body, resolve_source
from llmtune.models.precision import weights_dtype


def load_policy(recipe, source: str | Path | None = None):
    """The recipe's model as a causal LM (the base, or a full model saved in `source`)."""
    m = recipe.model
    return load_body(m.name, recipe.data.task, trust_remote_code=m.trust_remote_code, revision=m.revision,
                     dtype=m.dtype, source=source)


@dataclass(frozen=True)
class ModelRef:
    """Which base model a run started from: the fields of a recipe's `model` section that
    loading needs, as a finished run's final/llmtune.json records them."""

    name: str
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: str = "auto"

    @classmethod
    def from_info(cls, info: dict) -> "ModelRef":
        model = info.get("model") or {"name": info["base_model"]}
        return cls(**{k: v for k, v in model.items() if k in cls.__dataclass_fields__})


def load_reward_base(m, tok):
    """A sequence classifier with a single output (the reward), a new head on the body of
    `m` (a recipe's model section, or a ModelRef)."""
    from transformers import AutoModelForSequenceClassification

    if tok.eos_token is None:
        # trl's reward trainer ends every text with EOS; encoders (BERT) end theirs with SEP.
        tok.eos_token = tok.sep_token or tok.pad_token
    if m.name in ("tiny-llama", "tiny-gpt2", "tiny-bert"):
        config = builtin.tiny_config(m.name, vocab_size=len(tok))
        config.num_labels = 1
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            setattr(config, key, getattr(tok, key))
        # Seeded like builtin.build_tiny: a trained adapter always finds the same base again.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForSequenceClassification.from_config(config).to(weights_dtype(m.dtype))
        model.config.name_or_path = m.name
    else:
        kwargs = {"num_labels": 1, "trust_remote_code": m.trust_remote_code, "revision": m.revision,
                  "dtype": weights_dtype(m.dtype)}
        try:
            model = AutoModelForSequenceClassification.from_pretrained(resolve_source(m.name), **kwargs)
        except (OSError, ValueError) as exc:
            raise hub_error(m.name, exc) from None
    # A sequence classifier finds each sequence's last real token through the pad id.
    model.config.pad_token_id = tok.pad_token_id
    return model


def frozen_copy(model):
    """The reference model: the policy as it was before training, never updated."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def make_name_loadable(model, folder: Path) -> None:
    """GRPO/RLOO with beta > 0 build their reference by loading `config._name_or_path`;
    a model built from a config (tiny-llama) has no such path, so save it once."""
    name = getattr(model.config, "_name_or_path", "") or ""
    if name and Path(name).expanduser().is_dir():
        return
    if name and not builtin.is_builtin(name):
        return  # a hub id: loadable (from the cache, since the policy was loaded from it)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    model.config._name_or_path = str(folder)


def is_adapter(final: Path) -> bool:
    return (Path(final) / "adapter_config.json").exists()


def load_trained_policy(recipe, final: Path):
    """A run's final/: a full causal LM, or the base with its saved adapter."""
    if is_adapter(final):
        from peft import PeftModel

        return PeftModel.from_pretrained(load_policy(recipe), str(final))
    return load_policy(recipe, source=final)


def load_trained_reward(m, tok, final: Path):
    """A reward run's final/: a full sequence classifier, or the base (`m`) with its adapter."""
    final = Path(final)
    if is_adapter(final):
        from peft import PeftModel

        return PeftModel.from_pretrained(load_reward_base(m, tok), str(final))
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(str(final), dtype=weights_dtype(m.dtype))
    except (OSError, ValueError) as exc:
        raise UserError(f"{final}: could not load the reward model ({exc})") from None


def parameter_counts(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
