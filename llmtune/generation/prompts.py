"""A conversation (role/content messages) -> the token ids a model continues, rendered the way
the model was trained:

- `chat`: through the tokenizer's chat template, with the generation prompt (the assistant's
  header) at the end; the ids are the template's text tokenized without added special tokens,
  as training tokenized it (data/chat_masks.py);
- `plain`: alpaca rows trained with `data.prompt_template` (`prompt_style: plain`): each user
  turn fills the template's instruction (a message may carry `instruction` and `input` apart), each answer follows it and ends with end-of-sequence,
  as training wrote one example (data/encode.py); a system message goes in front;
- `text`: a model trained on raw text (or a base model without a chat template) continues the
  messages' contents, one per line.
"""

from __future__ import annotations

from dataclasses import dataclass

CHAT, PLAIN, TEXT = "chat", "plain", "text"


@dataclass(frozen=True)
class PromptFormat:
    style: str
    template: str | None = None
    """data.prompt_template (style `plain` only)."""

    def describe(self) -> str:
        return {CHAT: "the chat template", PLAIN: "the plain prompt template (data.prompt_template)",
                TEXT: "plain text (no template)"}[self.style]

    def render(self, tok, messages: list[dict]) -> list[int]:
        if self.style == CHAT:
            plain = [{"role": m["role"], "content": m["content"]} for m in messages]
            text = tok.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
            return tok(text, add_special_tokens=False)["input_ids"]
        if self.style == PLAIN:
            return _plain(tok, messages, self.template or "{instruction}")
        text = "\n".join(m["content"] for m in messages)
        return tok(text, add_special_tokens=True)["input_ids"]


def _plain(tok, messages: list[dict], template: str) -> list[int]:
    from llmtune.data.prompt_style import render_alpaca_prompt

    pieces: list[str | int] = []
    system = "".join(m["content"] + "\n\n" for m in messages if m["role"] == "system")
    for m in messages:
        if m["role"] == "user":
            # an alpaca row keeps its input apart, for the template's {input} / {input_block}
            fields = (m["instruction"], m.get("input", "")) if "instruction" in m else (m["content"], "")
            pieces.append(system + render_alpaca_prompt(template, *fields))
            system = ""
        elif m["role"] == "assistant":
            pieces.append(m["content"])
            if tok.eos_token_id is not None:
                pieces.append(tok.eos_token_id)
    ids: list[int] = []
    for piece in pieces:
        if isinstance(piece, int):
            ids.append(piece)
        else:  # special tokens (BOS) once, at the start, as for one training example
            ids += tok(piece, add_special_tokens=not ids)["input_ids"]
    return ids
