"""Prefix tuning: learned key/value prefixes in front of every transformer block's attention.

Our own implementation (peft's breaks with transformers 5: generate() ignores the prefix and
BERT refuses it). The prefix is added inside the attention function (_prefix_attention.py),
so it works the same for encoders and decoders and survives generate()'s KV cache.

Saved format (final/): `prefix.safetensors` with one tensor `prefix` laid out
(layer, key|value, kv_head, token, head_dim), already folded through the
reparameterisation MLP if one was used; `prefix_config.json` with those sizes; and
`head.safetensors` for classification. Nothing of the base model is saved.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from llmtune.errors import UserError
from llmtune.atomic import write_json
from llmtune.methods.base import Method, MethodConfig, freeze
from llmtune.methods.registry import register_method

PREFIX_FILE = "prefix.safetensors"
PREFIX_CONFIG = "prefix_config.json"
FORMAT = "llmtune-prefix/1"


class PrefixConfig(MethodConfig):
    name: Literal["prefix"]
    num_virtual_tokens: int = Field(20, gt=0)
    """Prefix length: learned key/value slots put in front of every layer's attention."""
    reparameterize: bool = False
    """Produce the prefixes from a per-token embedding through a two-layer MLP (Li & Liang
    2021), which can steady training; the MLP is folded away at save time."""
    hidden: int = Field(512, gt=0)
    """Width of the reparameterisation MLP (used only with `reparameterize: true`)."""
    init: Literal["random", "text"] = "random"
    """Starting prefixes: `random` (standard normal, about the scale of real keys and values)
    or `text`: the keys and values the model itself computes at every layer for `init_text`'s
    tokens (repeated or cut to `num_virtual_tokens`), so training starts from a prefix the
    model reads as ordinary words rather than from noise (Li & Liang 2021 found real words'
    activations a better start with little data). Not with `reparameterize`."""
    init_text: str | None = None
    """Text whose keys and values start the prefix (with `init: text`)."""

    @model_validator(mode="after")
    def _init_fits(self):
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("init: text needs init_text (the text whose keys and values start the prefix)")
        if self.init_text is not None and self.init != "text":
            raise ValueError("init_text is used only with init: text; set init: text or drop init_text")
        if self.init == "text" and self.reparameterize:
            raise ValueError("init: text sets the prefixes directly, which reparameterize replaces with an MLP's "
                             "output; use one or the other")
        return self


@register_method
class Prefix(Method):
    name = "prefix"
    Config = PrefixConfig
    config: PrefixConfig
    summary = "learned key/value prefixes at every attention layer (optional MLP reparameterisation)"
    virtual_tokens_at = "attention"

    @property
    def virtual_tokens(self) -> int:
        return self.config.num_virtual_tokens

    def apply(self, body, *, causal: bool):
        import torch

        from llmtune.methods.prompts._prefix_attention import PrefixEncoder, attention_shape

        c = self.config
        freeze(body)
        layers, kv_heads, head_dim = attention_shape(body.config)
        encoder = PrefixEncoder(layers, kv_heads, head_dim, c.num_virtual_tokens,
                                mlp_hidden=c.hidden if c.reparameterize else None,
                                embed_dim=body.config.hidden_size)
        if c.init == "text":
            from llmtune.methods.prompts._prefix_attention import text_key_values
            from llmtune.methods.prompts.soft_prompt import _text_token_ids

            with torch.no_grad():
                encoder.prefix.copy_(text_key_values(body, _text_token_ids(body, c.init_text or ""), c.num_virtual_tokens))
        _install(body, encoder)
        return body

    def save(self, body, out_dir: Path) -> None:
        import torch
        from safetensors.torch import save_file

        encoder = body.llmtune_prefix
        with torch.no_grad():
            prefix = encoder().detach().float().cpu().contiguous()
        save_file({"prefix": prefix}, str(Path(out_dir) / PREFIX_FILE))
        layers, _, kv_heads, tokens, head_dim = prefix.shape
        write_json(Path(out_dir) / PREFIX_CONFIG, {
            "format": FORMAT, "layout": ["layer", "key|value", "kv_head", "token", "head_dim"],
            "num_layers": layers, "num_key_value_heads": kv_heads, "num_virtual_tokens": tokens,
            "head_dim": head_dim, "trained_with_reparameterization": self.config.reparameterize,
        })

    def load(self, body, from_dir: Path, *, causal: bool):
        from safetensors.torch import load_file

        from llmtune.methods.prompts._prefix_attention import PrefixEncoder, attention_shape

        from_dir = Path(from_dir)
        info = json.loads((from_dir / PREFIX_CONFIG).read_text())
        if info.get("format") != FORMAT:
            raise UserError(f"{from_dir / PREFIX_CONFIG}: not an llmtune prefix (format {info.get('format')!r})")
        prefix = load_file(str(from_dir / PREFIX_FILE))["prefix"]
        expected = attention_shape(body.config)
        found = (info["num_layers"], info["num_key_value_heads"], info["head_dim"])
        if found != expected:
            raise UserError(f"{from_dir}: the prefix was trained for a model with (layers, kv heads, head dim) "
                            f"{found}, this base model has {expected}; load it onto the model it was trained on")
        encoder = PrefixEncoder.from_tensor(prefix)
        encoder.requires_grad_(False)
        _install(body, encoder)
        return body


def _install(body, encoder) -> None:
    from llmtune.methods.prompts._prefix_attention import install_prefix

    if install_prefix(body, encoder) == 0:
        raise UserError(f"method prefix: {type(body).__name__} does not route attention through "
                        f"transformers' AttentionInterface, so a prefix cannot be added to it; "
                        f"use lora or adapter for this model")
