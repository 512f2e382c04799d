"""A run's tokenizer as GGUF metadata: vocabulary, merges, token types, special token ids,
whether BOS/EOS are added, the pre-tokenizer by the name llama.cpp knows it, and the chat
template.

Covered: byte-level BPE tokenizers (GPT-2, SmolLM2, Llama 3, Qwen2 and llmtune's tiny
tokenizer), written as llama.cpp's `gpt2` tokenizer model. A sentencepiece-style vocabulary
(Llama 2, Mistral) is refused with exit 2. The pre-tokenizer name is chosen from what the
tokenizer does (its pre-tokenizer steps), and the export's tokenizer check confirms it: the
tokenizer read back from the file must give the same ids on sample strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llmtune.errors import UserError

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # gguf.TokenType values

# A `{% generation %}` or `{% endgeneration %}` tag, with what transformers' Jinja settings
# (trim_blocks, lstrip_blocks) strip around a block tag: the indentation before it on its line
# and one newline after it.
_GENERATION_TAG = re.compile(r"(?m)(?:^[ \t]*)?\{%-?\s*(?:end)?generation\s*-?%\}\n?")


@dataclass
class TokenizerFields:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int]
    """bos, eos, unk, pad -> id (those the tokenizer has)."""
    add_bos: bool
    add_eos: bool
    chat_template: str | None
    template_note: str | None = None
    """Why the chat template was written as it is (None when it needed no change)."""


def tokenizer_fields(tok, vocab_size: int) -> TokenizerFields:
    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise UserError("GGUF export covers byte-level BPE tokenizers (GPT-2, SmolLM2, Llama 3, Qwen2 style); this "
                        f"run's tokenizer is a {model.get('type')} model without a byte-level pre-tokenizer. Export a "
                        "merged transformers folder instead (`llmtune export RUN --out DIR --merge`) and convert it "
                        "with llama.cpp's convert_hf_to_gguf.py")
    tokens, types = _vocabulary(model["vocab"], spec.get("added_tokens") or [], vocab_size)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    add_bos, add_eos = _added_specials(tok)
    template, note = _portable_template(tok)
    return TokenizerFields(tokens, types, merges, _pre_name(spec.get("pre_tokenizer") or {}), _special_ids(tok),
                           add_bos, add_eos, template, note)


def add_to_writer(writer, fields: TokenizerFields) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(fields.pre)
    writer.add_token_list(fields.tokens)
    writer.add_token_types(fields.token_types)
    writer.add_token_merges(fields.merges)
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id, "unk": writer.add_unk_token_id,
              "pad": writer.add_pad_token_id}
    for name, token_id in fields.special_ids.items():
        adders[name](token_id)
    writer.add_add_bos_token(fields.add_bos)
    writer.add_add_eos_token(fields.add_eos)
    writer.add_add_space_prefix(False)
    if fields.chat_template:
        writer.add_chat_template(fields.chat_template)


def _vocabulary(vocab: dict[str, int], added: list[dict], vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens by id, each with its type; ids the tokenizer leaves empty, and rows of the
    embedding past the tokenizer's last id, become unused `[PAD<id>]` tokens (llama.cpp wants
    one token per embedding row)."""
    by_id: dict[int, tuple[str, int]] = {i: (t, NORMAL) for t, i in vocab.items()}
    for entry in added:
        by_id[entry["id"]] = (entry["content"], CONTROL if entry.get("special") else USER_DEFINED)
    count = max(by_id) + 1
    if count > vocab_size:
        raise UserError(f"GGUF export: the tokenizer has ids up to {count - 1}, but the model's embedding has only "
                        f"{vocab_size} rows; the run's tokenizer and model do not belong together")
    pairs = [by_id.get(i, (f"[PAD{i}]", UNUSED)) for i in range(vocab_size)]
    return [t for t, _ in pairs], [k for _, k in pairs]


def _special_ids(tok) -> dict[str, int]:
    ids = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "unk": tok.unk_token_id, "pad": tok.pad_token_id}
    return {name: int(i) for name, i in ids.items() if isinstance(i, int)}


def _added_specials(tok) -> tuple[bool, bool]:
    """Whether encoding adds BOS in front and EOS at the end, found by encoding, and nothing
    else (llama.cpp can add only those two)."""
    plain = tok("hello", add_special_tokens=False)["input_ids"]
    full = tok("hello")["input_ids"]
    bos = tok.bos_token_id is not None and full[:1] == [tok.bos_token_id] and plain[:1] != [tok.bos_token_id]
    eos = tok.eos_token_id is not None and full[-1:] == [tok.eos_token_id] and plain[-1:] != [tok.eos_token_id]
    expected = [tok.bos_token_id] * bos + plain + [tok.eos_token_id] * eos
    if full != expected:
        raise UserError(f"GGUF export: the tokenizer adds tokens other than BOS/EOS when encoding ({full} for "
                        f"{plain}); llama.cpp cannot reproduce that. Export a merged transformers folder instead "
                        f"(`llmtune export RUN --out DIR --merge`)")
    return bos, eos


def _pre_name(pre: dict) -> str:
    """llama.cpp's name for the way this tokenizer splits text before BPE."""
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps or []]
    last = (steps or [{}])[-1]
    if kinds == ["ByteLevel"] and last.get("use_regex", True) and not last.get("add_prefix_space"):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and last.get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not last.get("use_regex", True):
        name = _split_name((steps[0].get("pattern") or {}).get("Regex"))
        if name:
            return name
    raise UserError(f"GGUF export: this tokenizer splits text with {kinds or 'no'} pre-tokenizer steps, which "
                    f"llmtune cannot name for llama.cpp (it knows GPT-2, SmolLM2, Llama 3 and Qwen2 splitting). "
                    f"Export a merged transformers folder instead (`llmtune export RUN --out DIR --merge`) and "
                    f"convert it with llama.cpp's convert_hf_to_gguf.py")


def _split_name(regex: str | None) -> str | None:
    """The llama.cpp pre-tokenizer whose split regex this is, from transformers' GGUF reader's
    own table (so what is written is what that reader rebuilds)."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:  # older transformers: no such table, and its reader rebuilds no split regex
        return None
    preferred = ("llama-bpe", "qwen2")  # the names llama.cpp's converter writes for these splits
    names = [n for n, r in GGUF_PRE_TOKENIZER_SPLITS.items() if r == regex]
    return next((n for n in preferred if n in names), names[0] if names else None)


SAMPLE_CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one?"}],
]


def _portable_template(tok) -> tuple[str | None, str | None]:
    """The chat template with transformers' `{% generation %}` markers removed (they only mark
    the assistant's tokens for training; llama.cpp's template engine does not know them),
    kept only if it renders the sample conversations exactly as the original does."""
    template = getattr(tok, "chat_template", None)
    if not isinstance(template, str) or not template:
        return None, None
    cleaned = _GENERATION_TAG.sub("", template)
    if cleaned == template:
        return template, None
    if all(_same_rendering(tok, c, template, cleaned) for c in SAMPLE_CONVERSATIONS):
        return cleaned, "removed the template's {% generation %} markers (training-only; same rendering)"
    return template, ("kept the template's {% generation %} markers: without them it renders differently, and "
                      "llama.cpp's template engine may not accept them")


def _same_rendering(tok, conversation: list[dict[str, str]], a: str, b: str) -> bool:
    try:
        return render(tok, conversation, a) == render(tok, conversation, b)
    except Exception:  # noqa: BLE001 - a template may refuse a conversation (no system role, say)
        return False


def render(tok, conversation: list[dict[str, str]], template: str | None = None, generation_prompt: bool = True
           ) -> str:
    return tok.apply_chat_template(conversation, chat_template=template, tokenize=False,
                                   add_generation_prompt=generation_prompt)


def describe(fields: TokenizerFields) -> dict[str, Any]:
    """What the export's JSON and llmtune.json record about the written tokenizer."""
    return {"model": "gpt2", "pre": fields.pre, "tokens": len(fields.tokens), "merges": len(fields.merges),
            "special_ids": fields.special_ids, "add_bos": fields.add_bos, "add_eos": fields.add_eos,
            "chat_template": fields.chat_template is not None, "chat_template_note": fields.template_note}
