"""Soft prompts: prompt tuning (learned virtual tokens) and p-tuning (the same, produced by an
MLP or LSTM prompt encoder). The base model stays frozen.

Our own small implementation (_soft_prompt_model.py) rather than peft's: one code path for a
bare encoder under llmtune's pooled head and for causal LMs, with the virtual positions
stripped from the outputs so pooling and the loss see only real tokens.

Saved format (final/): `soft_prompt.safetensors` with one tensor `prompt` of shape
(num_virtual_tokens, hidden_size), already passed through the prompt encoder if one was
used; `soft_prompt_config.json` with those sizes; and `head.safetensors` for
classification. The prompt goes in front of the token embeddings, before position
embeddings are added.
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

PROMPT_FILE = "soft_prompt.safetensors"
PROMPT_CONFIG = "soft_prompt_config.json"
FORMAT = "llmtune-soft-prompt/1"


class SoftPromptConfig(MethodConfig):
    name: Literal["soft-prompt"]
    num_virtual_tokens: int = Field(20, gt=0)
    """Number of learned vectors put in front of every input."""
    init: Literal["random", "vocab", "text"] = "random"
    """Starting prompt: random vectors at the scale of the word embeddings, the embeddings of
    randomly drawn vocabulary tokens, or the embeddings of `init_text`'s tokens (repeated or
    cut to `num_virtual_tokens`). Only `random` applies with a prompt encoder."""
    init_text: str | None = None
    """Text whose token embeddings start the prompt (with `init: text`), e.g. a task
    description such as "Classify the sentiment of this review:"."""
    encoder: Literal["none", "mlp", "lstm"] = "none"
    """`none`: prompt tuning (the vectors train directly). `mlp` or `lstm`: p-tuning (the
    vectors come out of a small trained prompt encoder; folded away at save time)."""
    encoder_hidden: int = Field(256, gt=0)
    """Hidden width of the prompt encoder (`mlp` or `lstm`)."""

    @model_validator(mode="after")
    def _init_fits(self):
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("init: text needs init_text (the text whose tokens start the prompt)")
        if self.init_text is not None and self.init != "text":
            raise ValueError("init_text is used only with init: text; set init: text or drop init_text")
        if self.encoder != "none" and self.init != "random":
            raise ValueError(f"init: {self.init} sets the prompt vectors directly, which a prompt encoder "
                             f"(encoder: {self.encoder}) replaces; use init: random with an encoder")
        return self


@register_method
class SoftPrompt(Method):
    name = "soft-prompt"
    Config = SoftPromptConfig
    config: SoftPromptConfig
    summary = "learned virtual tokens before the input: prompt tuning, or p-tuning with an MLP/LSTM encoder"
    virtual_tokens_at = "input"
    peft_form = True

    @property
    def virtual_tokens(self) -> int:
        return self.config.num_virtual_tokens

    def apply(self, body, *, causal: bool):
        from llmtune.methods.prompts._soft_prompt_model import PromptedModel, PromptEncoder

        c = self.config
        freeze(body)
        encoder = PromptEncoder(c.num_virtual_tokens, body.config.hidden_size, c.encoder,
                                c.encoder_hidden, init=self._initial_prompt(body))
        return PromptedModel(body, encoder)

    def _initial_prompt(self, body):
        import torch

        from llmtune.methods.prompts import _soft_prompt_model as spm

        c = self.config
        n, dim = c.num_virtual_tokens, body.config.hidden_size
        if c.encoder != "none":
            return torch.randn(n, dim)  # the encoder's input; its own layers set the scale
        if c.init == "vocab":
            return spm.vocab_init(body, n)
        if c.init == "text":
            return spm.text_init(body, _text_token_ids(body, c.init_text), n)
        return torch.randn(n, dim) * spm.embedding_std(body)

    def save(self, body, out_dir: Path) -> None:
        import torch
        from safetensors.torch import save_file

        with torch.no_grad():
            prompt = body.prompt().detach().float().cpu().contiguous()
        save_file({"prompt": prompt}, str(Path(out_dir) / PROMPT_FILE))
        write_json(Path(out_dir) / PROMPT_CONFIG, {
            "format": FORMAT, "num_virtual_tokens": prompt.shape[0], "hidden_size": prompt.shape[1],
            "trained_with_encoder": self.config.encoder,
        })

    def load(self, body, from_dir: Path, *, causal: bool):
        from safetensors.torch import load_file

        from llmtune.methods.prompts._soft_prompt_model import PromptedModel, PromptEncoder

        from_dir = Path(from_dir)
        info = json.loads((from_dir / PROMPT_CONFIG).read_text())
        if info.get("format") != FORMAT:
            raise UserError(f"{from_dir / PROMPT_CONFIG}: not an llmtune soft prompt (format {info.get('format')!r})")
        if info["hidden_size"] != body.config.hidden_size:
            raise UserError(f"{from_dir}: the prompt has width {info['hidden_size']}, this base model's embeddings "
                            f"{body.config.hidden_size}; load it onto the model it was trained on")
        prompt = load_file(str(from_dir / PROMPT_FILE))["prompt"]
        encoder = PromptEncoder(prompt.shape[0], prompt.shape[1], "none", init=prompt)
        encoder.requires_grad_(False)
        return PromptedModel(body, encoder)


    def to_peft(self, body, out_dir: Path, *, causal: bool) -> bool:
        """Write the trained prompt (`body`: the loaded PromptedModel) in peft's prompt-tuning
        format, which `PeftModel.from_pretrained(base, out_dir)` reads back (its logits carry
        the virtual positions in front; the rest equal llmtune's). Causal LMs only: for
        classification peft would hand a stock classifier `inputs_embeds`, from which decoder
        classes cannot find the last real token of a padded row, and no stock class is
        llmtune's mean/cls head. Returns whether it wrote anything."""
        if not causal:
            return False
        import torch
        from peft import PromptTuningConfig, get_peft_model

        peft_model = get_peft_model(body.base, PromptTuningConfig(task_type="CAUSAL_LM",
                                                                  num_virtual_tokens=body.num_virtual_tokens))
        with torch.no_grad():
            peft_model.prompt_encoder["default"].embedding.weight.copy_(body.prompt())
        peft_model.save_pretrained(str(out_dir))
        return True


def _text_token_ids(body, text: str) -> list[int]:
    """Token ids of `text` under the model's own tokenizer, found from the folder or hub id the
    body was loaded from; built-in tiny models carry no name and all share one tokenizer."""
    from llmtune.models.builtin import load_tiny_tokenizer
    from llmtune.models.load import load_tokenizer

    source = body.config.name_or_path
    tok = load_tokenizer(source) if source else load_tiny_tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise UserError(f"method.init_text {text!r} has no tokens under the model's tokenizer; give some words")
    return ids
