"""Assistant-only loss masks for chat rows: right, or refused with the row and the fix.

A chat template turns messages into one string; training must learn exactly the assistant
turns in it and nothing else. Two ways to find them, tried in this order:

1. Generation markers. When the template wraps assistant turns in
   `{% generation %}...{% endgeneration %}`, the tokenizer's `return_assistant_tokens_mask`
   marks the tokens rendered inside the markers.
2. Incremental renderings. Rendering messages[:i] with the generation prompt must be a
   prefix of rendering messages[:i+1] (the assistant turn i), and each such rendering must be a
   prefix of every later one. The assistant turn is then the text between the two. Templates
   that rewrite earlier turns once a later one exists (Qwen3 and DeepSeek-R1 drop earlier
   `<think>` reasoning) break this, and slicing strings anyway trains on the wrong text.

Either way the whole conversation is tokenized once (the ids a model sees at inference), and
the result is checked: the tokens marked for the k-th assistant message, decoded, must equal
that message's content (see `same_content` for what "equal" means). If neither way passes,
the row is refused (DataError, exit 2) with what differs and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmtune.errors import DataError

GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
MARKERS, INCREMENTAL = "generation markers", "incremental renderings"
FIX = ("Fix: give the tokenizer a chat template whose assistant turns are wrapped in {% generation %} ... "
       "{% endgeneration %}, split multi-turn conversations into one row per assistant turn, or use alpaca "
       "rows (data.format: alpaca, instruction/output columns)")


@dataclass
class ChatEncoding:
    ids: list[int]
    trains: list[bool]
    """One flag per token: True where the loss trains (the assistant turns)."""
    source: str
    """How the assistant tokens were found: MARKERS or INCREMENTAL."""
    markers_failed: str | None = None
    """Why the template's generation markers were not used although it has them."""


class Mismatch(Exception):
    """A check failed; the message says what differs (the caller names the row)."""


def has_generation_markers(tok) -> bool:
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return isinstance(template, str) and bool(GENERATION_MARKER.search(template))


def encode_chat(msgs: list[dict], tok, where: str) -> ChatEncoding:
    """Token ids and loss flags for one conversation, verified; DataError naming `where` otherwise."""
    if not any(m.get("role") == "assistant" for m in msgs):
        raise DataError(f"{where}: no assistant message to learn from")
    failures = []
    if has_generation_markers(tok):
        try:
            return _by_markers(msgs, tok)
        except Mismatch as exc:
            failures.append(f"With the template's {{% generation %}} markers, {exc}")
        except (ValueError, NotImplementedError) as exc:  # e.g. a tokenizer without character offsets
            failures.append(f"With the template's {{% generation %}} markers, the tokenizer could not build the "
                            f"mask ({exc})")
    try:
        encoding = _by_increments(msgs, tok)
    except Mismatch as exc:
        failures.append(f"{'B' if not failures else 'b'}y incremental renderings, {exc}")
        raise DataError(f"{where}: cannot find the assistant tokens of this conversation reliably, so training on "
                        f"it would learn the wrong text. " + "; ".join(failures) + f". {FIX}") from None
    encoding.markers_failed = failures[0] if failures else None
    return encoding


# -- what "equal" means ---------------------------------------------------------------------
def end_of_turn_tokens(tok) -> list[str]:
    """Strings a template may close a turn with: the tokenizer's special tokens (eos,
    `<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, ...), longest first."""
    found = set(getattr(tok, "all_special_tokens", []) or [])
    for added in getattr(tok, "added_tokens_decoder", {}).values():
        if getattr(added, "special", False):
            found.add(added.content)
    return sorted((t for t in found if t), key=len, reverse=True)


def strip_turn(text: str, end_tokens: list[str]) -> str:
    """`text` without whitespace at either end and without one end-of-turn token at its end."""
    text = text.strip()
    for token in end_tokens:
        if text.endswith(token):
            return text[: -len(token)].strip()
    return text


def same_content(trained: str, content: str, end_tokens: list[str]) -> bool:
    """The trained text of a turn equals the message's content when they are identical after
    removing whitespace at both ends and one trailing end-of-turn special token from the
    trained text. Everything in between must match character for character: a role name, a
    fragment of the next header, or reasoning the template dropped all make them differ."""
    return strip_turn(trained, end_tokens) == content.strip()


def content_text(message: dict) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, list):  # text parts of multimodal-style content
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


# -- the two ways ---------------------------------------------------------------------------
def _render(tok, msgs: list[dict], generation_prompt: bool) -> str:
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)


def _by_markers(msgs: list[dict], tok) -> ChatEncoding:
    out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), [bool(x) for x in out["assistant_masks"]]
    runs = _runs(mask)
    turns = [i for i, m in enumerate(msgs) if m.get("role") == "assistant"]
    if len(runs) != len(turns):
        raise Mismatch(f"the markers cover {len(runs)} stretch(es) of tokens but the row has {len(turns)} assistant "
                       f"message(s)")
    _verify(tok, ids, runs, [msgs[i] for i in turns], turns)
    return ChatEncoding(ids, mask, MARKERS)


def _by_increments(msgs: list[dict], tok) -> ChatEncoding:
    spans: list = []
    turns: list = []
    done = ""
    for i, msg in enumerate(msgs):
        if msg.get("role") != "assistant":
            continue
        before = _render(tok, msgs[:i], True) if i else ""
        after = _render(tok, msgs[: i + 1], False)
        if turns:
            _check_prefix(done, before, f"messages 1-{turns[-1] + 1}", f"messages 1-{i} with the generation prompt")
        _check_prefix(before, after, f"messages 1-{i} with the generation prompt", f"messages 1-{i + 1}")
        spans.append((len(before), len(after)))
        turns.append(i)
        done = after
    full = _render(tok, msgs, False)
    _check_prefix(done, full, f"messages 1-{turns[-1] + 1}", f"all {len(msgs)} messages")
    ids, trains, runs = _tokenize_spans(tok, full, spans)
    _verify(tok, ids, runs, [msgs[i] for i in turns], turns)
    return ChatEncoding(ids, trains, INCREMENTAL)


def _check_prefix(head: str, text: str, head_what: str, text_what: str) -> None:
    if text.startswith(head):
        return
    at = next((j for j, (a, b) in enumerate(zip(head, text)) if a != b), min(len(head), len(text)))
    raise Mismatch(f"rendering {text_what} does not start with the rendering of {head_what}: they differ at "
                   f"character {at} ({_excerpt(head, at)} became {_excerpt(text, at)}); the template renders "
                   f"earlier turns differently once later ones exist (Qwen3/DeepSeek-R1-style templates drop "
                   f"earlier <think> reasoning)")


def _tokenize_spans(tok, text: str, spans: list[tuple[int, int]]):
    """Ids of the whole text, a train flag per token (the token overlaps a span), and the
    token index runs of each span."""
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        runs = []
        for start, end in spans:
            hit = [t for t, (s, e) in enumerate(offsets) if (s < end and e > start) or (s == e and start <= s < end)]
            runs.append((hit[0], hit[-1] + 1) if hit else (0, 0))
    else:  # no offsets: tokenize the pieces between span edges one by one
        ids, runs, pos = [], [], 0
        for start, end in spans:
            ids += tok(text[pos:start], add_special_tokens=False)["input_ids"] if start > pos else []
            piece = tok(text[start:end], add_special_tokens=False)["input_ids"]
            runs.append((len(ids), len(ids) + len(piece)))
            ids += piece
            pos = end
        ids += tok(text[pos:], add_special_tokens=False)["input_ids"] if len(text) > pos else []
    trains = [False] * len(ids)
    for a, b in runs:
        trains[a:b] = [True] * (b - a)
    return ids, trains, runs


def _runs(mask: list[bool]) -> list[tuple[int, int]]:
    runs, start = [], None
    for t, on in enumerate(mask + [False]):
        if on and start is None:
            start = t
        elif not on and start is not None:
            runs.append((start, t))
            start = None
    return runs


def _verify(tok, ids: list[int], runs, messages: list[dict], positions: list[int]) -> None:
    ends = end_of_turn_tokens(tok)
    for k, ((a, b), msg, pos) in enumerate(zip(runs, messages, positions)):
        trained = tok.decode(ids[a:b], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        content = content_text(msg)
        if not same_content(trained, content, ends):
            got, want = strip_turn(trained, ends), content.strip()
            at = next((j for j, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
            raise Mismatch(f"assistant message {k + 1} (message {pos + 1}) would train on {_excerpt(got, at)} "
                           f"but its content is {_excerpt(want, at)} (first difference at character {at})")


def _excerpt(text: str, at: int, width: int = 40) -> str:
    start = max(0, at - width // 2)
    piece = text[start:start + width]
    return ("…" if start else "") + repr(piece) + ("…" if start + width < len(text) else "")
