"""How alpaca rows (instruction, input, output) become a prompt: through the model's chat
template (user turn = instruction + input, assistant turn = output), or as the plain
`data.prompt_template` text. Training, `llmtune eval` and `llmtune preview` all ask here, so
a model is prompted the way it was trained."""

from __future__ import annotations

from llmtune.errors import DataError

CHAT, PLAIN = "chat", "plain"


def has_chat_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def resolve_prompt_style(data_cfg, tok) -> str:
    """`chat` or `plain` for this recipe's data section and this tokenizer."""
    style = data_cfg.prompt_style
    if style == PLAIN:
        return PLAIN
    if has_chat_template(tok):
        return CHAT
    if style == CHAT:
        raise DataError("data.prompt_style is chat, but the model's tokenizer has no chat template; use "
                        "prompt_style: plain (the data.prompt_template prompt) or a chat model")
    return PLAIN


def alpaca_user_turn(instruction: str, inp: str) -> str:
    """The user message an alpaca row becomes: the instruction, then the input after a blank line."""
    return f"{instruction}\n\n{inp}" if inp.strip() else instruction


def alpaca_messages(instruction: str, inp: str, output: str | None = None) -> list[dict]:
    msgs = [{"role": "user", "content": alpaca_user_turn(instruction, inp)}]
    if output is not None:
        msgs.append({"role": "assistant", "content": output})
    return msgs


def describe(summary: dict) -> str | None:
    """One line for the log: how sft prompts were rendered and how the loss mask was found."""
    parts = []
    style = summary.get("prompt_style")
    if style == CHAT:
        parts.append("alpaca rows rendered with the model's chat template (data.prompt_style: plain keeps the "
                     "data.prompt_template prompt)")
    elif style == PLAIN:
        parts.append("alpaca rows rendered with data.prompt_template")
    masks = summary.get("assistant_masks") or {}
    if masks:
        parts.append("assistant tokens found by " + ", ".join(f"{how} ({n} rows)" for how, n in sorted(masks.items())))
    if summary.get("markers_failed"):
        parts.append(f"{summary['markers_failed']} rows: the template's {{% generation %}} markers did not match "
                     f"the assistant turns, so verified incremental renderings were used")
    return "; ".join(parts) or None
