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


def render_alpaca_prompt(template: str, instruction: str, inp: str) -> str:
    """`data.prompt_template` filled with an alpaca row's instruction and input."""
    block = f"### Input:\n{inp}\n\n" if inp.strip() else ""
    return template.format(instruction=instruction, input=inp, input_block=block)


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


TEXT = "text"


def render_text_prompts(rows: list[dict], style: str, template: str | None, tok) -> list[dict]:
    """Online RL's text prompts rendered as a model was trained to read them: `chat` turns each
    into a user message (the chat template renders it), `plain` fills `template`'s instruction
    with it, `text` leaves it as it is. Chat-message prompts are already in chat form."""
    if style == TEXT:
        return rows
    if style == CHAT and not has_chat_template(tok):
        raise DataError("text prompts are to be rendered through the chat template (data.prompt_style, or the "
                        "parent run's), but the model's tokenizer has none; use prompt_style: plain or text")
    out = []
    for row in rows:
        prompt = row["prompt"]
        if isinstance(prompt, str):
            if style == CHAT:
                prompt = [{"role": "user", "content": prompt}]
            else:
                prompt = render_alpaca_prompt(template or "{instruction}", prompt, "")
        out.append({**row, "prompt": prompt})
    return out
