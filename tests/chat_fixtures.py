"""Chat-template fixtures: the tiny byte-level BPE tokenizer dressed as each model family
(the family's special tokens added, its template in the style of the original, written for
these tests under tests/assets/chat_templates/)."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "assets" / "chat_templates"
CHATML = ["<|im_start|>", "<|im_end|>"]

# fixture -> (bos, eos, other special tokens)
FAMILIES = {
    "chatml": (None, "<|im_end|>", CHATML),
    "chatml_generation": (None, "<|im_end|>", CHATML),
    "chatml_bad_markers": (None, "<|im_end|>", CHATML),
    "chatml_no_generation_prompt": (None, "<|im_end|>", CHATML),
    "qwen3": (None, "<|im_end|>", CHATML),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", ["<|start_header_id|>", "<|end_header_id|>"]),
    "gemma": ("<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    "mistral": ("<s>", "</s>", []),
}


@lru_cache(maxsize=1)
def _base():
    from llmtune.models.builtin import load_tiny_tokenizer

    return load_tiny_tokenizer()


def fixture_tokenizer(name: str):
    bos, eos, extra = FAMILIES[name]
    tok = copy.deepcopy(_base())
    special = {"eos_token": eos, "additional_special_tokens": extra}
    if bos:
        special["bos_token"] = bos
    tok.add_special_tokens(special)
    tok.chat_template = (TEMPLATES / f"{name}.jinja").read_text()
    return tok
