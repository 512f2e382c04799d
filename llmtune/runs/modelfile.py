"""An Ollama Modelfile for an exported GGUF file: FROM, a TEMPLATE in Ollama's Go template
syntax, stop tokens and PARAMETER lines.

The chat template is translated by rendering, never by recognising its text: the run's
tokenizer renders probe conversations, which must decompose into a fixed start (one with a
leading system message, one without, so a default system prompt is kept), then for each
message a role's prefix + the content + the role's suffix, then the generation prompt. That
layout is written as a Go template and checked by predicting the rendering of further
conversations (multi-turn, multi-line, spaces at the ends) and comparing with the real
rendering. ChatML (SmolLM2, Qwen) and llmtune's tiny template have this layout; a template
that does more (trims content, inserts dates, numbers turns, refuses a role) does not, and
then the Modelfile has no TEMPLATE line and says why.

A run trained with `data.prompt_style: plain` was taught `data.prompt_template`, so that
prompt (with the user's message as the instruction) is the TEMPLATE instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtune.runs.gguf_tokenizer import render

ROLES = ("system", "user", "assistant")
_MARK = "Q7zX"  # probe contents: text no template writes itself

NUM_CTX_CAP = 4096
"""The Modelfile's num_ctx: the model's context, at most this (Ollama allocates the whole
key/value cache up front; a larger window is one PARAMETER edit away)."""


@dataclass
class Layout:
    start: str
    """Text before the first message when it is not a system message (a default system prompt)."""
    start_system: str
    """Text before a leading system message."""
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str

    def predict(self, conversation: list[dict[str, str]], generation_prompt: bool) -> str:
        leading_system = bool(conversation) and conversation[0]["role"] == "system"
        out = [self.start_system if leading_system else self.start]
        for m in conversation:
            out.append(self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]])
        return "".join(out) + (self.generation if generation_prompt else "")


@dataclass
class Template:
    text: str | None
    """The TEMPLATE body (Go template syntax), or None when none could be written."""
    stops: list[str]
    note: str


def _probe(tok, conversation: list[tuple[str, str]], generation_prompt: bool = False) -> str:
    return render(tok, [{"role": r, "content": c} for r, c in conversation], generation_prompt=generation_prompt)


def _around(text: str, *contents: str) -> list[str] | None:
    """`text` cut at each content in turn: the pieces before, between and after them."""
    pieces, rest = [], text
    for content in contents:
        if rest.count(content) != 1:
            return None
        before, rest = rest.split(content)
        pieces.append(before)
    return pieces + [rest]


def chat_layout(tok) -> Layout | None:
    """The template's layout, found by rendering probes; None if it has none."""
    u1, u2, a1, s1 = (f"{_MARK}u1", f"{_MARK}u2", f"{_MARK}a1", f"{_MARK}s1")
    try:
        one = _probe(tok, [("user", u1)])
        with_prompt = _probe(tok, [("user", u1)], generation_prompt=True)
        ended = _around(_probe(tok, [("user", u1), ("assistant", a1)]), u1, a1)
        turns = _around(_probe(tok, [("user", u1), ("assistant", a1), ("user", u2)]), u1, a1, u2)
        system = _around(_probe(tok, [("system", s1), ("user", u1)]), s1, u1)
    except Exception:  # noqa: BLE001 - a template may refuse a role or a shape of conversation
        return None
    if not (ended and turns and system and with_prompt.startswith(one)):
        return None
    user_suffix, assistant_suffix = turns[3], ended[2]
    if not (turns[1].startswith(user_suffix) and turns[2].startswith(assistant_suffix)):
        return None
    user_prefix = turns[2][len(assistant_suffix):]
    if not (turns[0].endswith(user_prefix) and system[1].endswith(user_prefix)):
        return None
    start = turns[0][:len(turns[0]) - len(user_prefix)]
    system_start = start if system[0].startswith(start) else ""
    return Layout(start=start, start_system=system_start,
                  prefix={"system": system[0][len(system_start):], "user": user_prefix,
                          "assistant": turns[1][len(user_suffix):]},
                  suffix={"system": system[1][:len(system[1]) - len(user_prefix)], "user": user_suffix,
                          "assistant": assistant_suffix},
                  generation=with_prompt[len(one):])


CHECKS = [
    ([("user", "Hi there")], True),
    ([("system", "Be brief.\nVery brief."), ("user", "Two\nlines"), ("assistant", " padded answer "),
      ("user", "  and again  ")], True),
    ([("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")], False),
    ([("system", "s"), ("user", "q")], False),
]


def _verified(tok, layout: Layout) -> bool:
    for conversation, prompt in CHECKS:
        messages = [{"role": r, "content": c} for r, c in conversation]
        try:
            if render(tok, messages, generation_prompt=prompt) != layout.predict(messages, prompt):
                return False
        except Exception:  # noqa: BLE001
            return False
    return True


def _go_text(text: str) -> str:
    """Literal text inside a Go template: only `{{` would start an action."""
    return '{{ "{{" }}'.join(text.split("{{"))


def go_template(layout: Layout) -> str:
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{_go_text(layout.prefix[role])}'
        f'{{{{ .Content }}}}{_go_text(layout.suffix[role])}' for i, role in enumerate(ROLES))
    start = ""
    if layout.start or layout.start_system:
        start = (f'{{{{ if and .Messages (eq (index .Messages 0).Role "system") }}}}{_go_text(layout.start_system)}'
                 f'{{{{ else }}}}{_go_text(layout.start)}{{{{ end }}}}')
    return f'{start}{{{{ range .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{_go_text(layout.generation)}'


def _specials_in(tok, *texts: str) -> list[str]:
    found = [t for t in tok.all_special_tokens if any(t in text for text in texts)]
    return sorted(set(found), key=found.index)


def chat_template(tok) -> Template:
    eos = [tok.eos_token] if tok.eos_token else []
    if not getattr(tok, "chat_template", None):
        return Template(None, eos, "the run's tokenizer has no chat template")
    layout = chat_layout(tok)
    if layout is None or not _verified(tok, layout):
        return Template(None, eos, "the run's chat template does more than wrap each message in fixed text (it "
                                   "trims, numbers, dates or refuses some messages), so it was not translated")
    text = go_template(layout)
    if '"""' in text:
        return Template(None, eos, 'the chat template contains """, which a Modelfile cannot quote')
    stops = _specials_in(tok, layout.suffix["assistant"], layout.prefix["user"], layout.prefix["assistant"])
    return Template(text, list(dict.fromkeys(eos + stops)),
                    "TEMPLATE translated from the run's chat template (checked by rendering sample conversations)")


def plain_template(tok, prompt_template: str) -> Template:
    """The prompt a `prompt_style: plain` run was trained on, the user's message as the instruction."""
    from llmtune.data.prompt_style import render_alpaca_prompt

    text = render_alpaca_prompt(prompt_template, _MARK, "")
    body = "{{ .Prompt }}".join(_go_text(piece) for piece in text.split(_MARK))
    eos = [tok.eos_token] if tok.eos_token else []
    return Template(body, eos, "TEMPLATE is the run's data.prompt_template (it trained with prompt_style: plain); "
                               "one turn: earlier messages are not shown to the model")


def modelfile_text(gguf_name: str, template: Template, context: int, run_dir: str, quant: str) -> str:
    lines = [f"# Ollama Modelfile written by `llmtune export --format gguf` from {run_dir} ({quant}).",
             "# ollama create NAME -f Modelfile && ollama run NAME",
             f"FROM ./{gguf_name}"]
    if template.text is not None:
        lines.append(f'TEMPLATE """{template.text}"""')
    else:
        lines.append(f"# No TEMPLATE line: {template.note}. Ollama then chooses a template itself from the "
                     f"GGUF file's tokenizer.chat_template; check it with `ollama show NAME --template`.")
    lines += [f'PARAMETER stop "{stop}"' for stop in template.stops if '"' not in stop]
    lines.append(f"# the model allows {context} tokens; num_ctx is what Ollama reserves")
    lines.append(f"PARAMETER num_ctx {min(context, NUM_CTX_CAP)}")
    lines.append("# greedy, as llmtune's generation defaults; raise it for varied answers")
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"
