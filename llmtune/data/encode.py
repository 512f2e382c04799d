"""Turn rows into token ids for each supervised task. Problems name the row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, overload

from llmtune.data.prompt_style import render_alpaca_prompt  # noqa: F401  (also imported from here)
from llmtune.data.readers import Row
from llmtune.errors import DataError

IGNORE = -100  # label id the loss skips (prompt tokens in SFT, padding)


@dataclass
class EncodeStats:
    """Rows changed or left out, reported in the log and the manifest: never a silent drop."""

    truncated: int = 0
    dropped_empty: int = 0
    dropped_truncated: int = 0
    """sft rows whose response was cut off entirely by max_length (nothing left to learn)."""
    notes: list[str] = field(default_factory=list)
    prompt_style: str | None = None
    """sft alpaca rows: `chat` (the model's chat template) or `plain` (data.prompt_template)."""
    assistant_masks: dict[str, int] = field(default_factory=dict)
    """sft rows rendered through a chat template, by how their assistant tokens were found."""
    markers_failed: int = 0
    """Rows whose template's generation markers did not match the assistant turns."""


@overload
def _text(row: Row, col: str) -> str: ...
@overload
def _text(row: Row, col: str, required: Literal[True]) -> str: ...
@overload
def _text(row: Row, col: str, required: bool) -> str | None: ...
def _text(row: Row, col: str, required: bool = True) -> str | None:
    if col not in row.data:
        if not required:
            return None
        raise DataError(f"{row.where}: no column {col!r} (columns: {', '.join(map(str, row.data))}); "
                        f"map it with data.columns in the recipe")
    value = row.data[col]
    if value is None:
        return "" if required else None
    if isinstance(value, (dict, list, tuple)):
        raise DataError(f"{row.where}: column {col!r} holds a {type(value).__name__}, not text; "
                        f"map data.columns to a text column")
    return value if isinstance(value, str) else str(value)


def _label_text(row: Row, col: str) -> str:
    if col not in row.data:
        raise DataError(f"{row.where}: no column {col!r} (columns: {', '.join(map(str, row.data))}); "
                        f"map it with data.columns.label")
    value = row.data[col]
    text = "" if value is None else str(value).strip()
    if not text or isinstance(value, (dict, list)):
        raise DataError(f"{row.where}: the label in column {col!r} is {'empty' if not text else 'not a label'} "
                        f"({value!r}); fix or remove the row")
    return text


def label_names(rows: list[Row], col: str, given: list[str] | None) -> list[str]:
    if given:
        return list(given)
    seen = {_label_text(row, col) for row in rows}
    return sorted(seen, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s))


def label_id(row: Row, value: Any, names: list[str]) -> int:
    text = "" if value is None else str(value).strip()
    if not text:
        raise DataError(f"{row.where}: the label is empty; fix or remove the row")
    if text in names:
        return names.index(text)
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) or text.lstrip("-").isdigit():
        idx = int(text)
        if 0 <= idx < len(names):
            return idx
    raise DataError(f"{row.where}: label {value!r} is not in the label set ({', '.join(names)}); "
                    f"fix the row or list every label in data.labels")


def _truncate(ids: list[int], max_length: int, side: str) -> list[int]:
    return ids[-max_length:] if side == "left" else ids[:max_length]


def encode_classification(rows, tok, cfg, names: list[str], stats: EncodeStats) -> list[dict]:
    c = cfg.columns
    keep: list[Row] = []
    texts: list[str] = []
    pairs: list[str] = []
    for row in rows:
        text = _text(row, c.text)
        if not text.strip():
            if cfg.empty_rows == "drop":
                stats.dropped_empty += 1
                continue
            raise DataError(f"{row.where}: empty text in column {c.text!r}; remove the row or set "
                            f"data.empty_rows: drop")
        keep.append(row)
        texts.append(text)
        if c.text_pair:
            pairs.append(_text(row, c.text_pair))
    if not keep:
        raise DataError(f"{_source(rows)}: every row has an empty {c.text!r}; nothing to train on")
    labels = [label_id(r, r.data[c.label], names) for r in keep if _label_text(r, c.label)]
    ids, truncated = tokenize_classification(tok, texts, pairs or None, cfg.max_length, cfg.truncation_side,
                                             template=cfg.text_template)
    stats.truncated += truncated
    return [{"input_ids": x, "label": y} for x, y in zip(ids, labels)]


def tokenize_classification(tok, texts: list[str], pairs: list[str] | None, max_length: int,
                            truncation_side: str, template: str | None = None) -> tuple[list[list[int]], int]:
    """Token ids of classification inputs (texts, optionally paired, framed by
    `data.text_template`) as training saw them, and how many were cut to max_length. `llmtune
    serve` classifies through this too, so a served run reads its inputs exactly as it was
    trained and evaluated."""
    if template is not None:
        texts = [template.format(text=t, text_pair=p) for t, p in zip(texts, pairs or [""] * len(texts))]
        pairs = None  # the pair is inside the template now
    tok.truncation_side = truncation_side
    ids = tok(texts, pairs, truncation=False, verbose=False)["input_ids"]
    # Tokenize once; only the few over-long rows go through the tokenizer's truncation
    # (which knows how to cut sentence pairs and keep the special tokens).
    long = [i for i, x in enumerate(ids) if len(x) > max_length]
    if long:
        cut = tok([texts[i] for i in long], [pairs[i] for i in long] if pairs else None,
                  truncation=True, max_length=max_length)["input_ids"]
        for i, x in zip(long, cut):
            ids[i] = x
    return ids, len(long)


def _source(rows: list[Row]) -> str:
    """The file the rows came from, for messages about all of them."""
    where = rows[0].where if rows else "data"
    for sep in (" row ", ":"):
        if sep in where:
            return where.rsplit(sep, 1)[0]
    return where


def encode_causal_lm(rows, tok, cfg, stats: EncodeStats) -> list[dict]:
    out = []
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    texts = []
    for row in rows:
        text = _text(row, cfg.columns.text)
        if not text.strip():
            if cfg.empty_rows == "drop":
                stats.dropped_empty += 1
                continue
            raise DataError(f"{row.where}: empty text; remove the row or set data.empty_rows: drop")
        texts.append(text)
    for ids in tok(texts, add_special_tokens=True)["input_ids"]:
        ids = ids + eos
        if len(ids) > cfg.max_length:
            stats.truncated += 1
            ids = _truncate(ids, cfg.max_length, cfg.truncation_side)
        out.append({"input_ids": ids, "labels": list(ids)})
    return out


def _is_chat(rows: list[Row], cfg) -> bool:
    if cfg.format != "auto":
        return cfg.format == "chat"
    return cfg.columns.messages in rows[0].data


def encode_sft(rows, tok, cfg, stats: EncodeStats) -> list[dict]:
    from llmtune.data.prompt_style import resolve_prompt_style

    chat = _is_chat(rows, cfg)
    if not chat:
        stats.prompt_style = resolve_prompt_style(cfg, tok)
    out = []
    for row in rows:
        pieces = _chat_pieces(row, tok, cfg, stats) if chat else _alpaca_pieces(row, tok, cfg, stats)
        if pieces is None:
            stats.dropped_empty += 1
            continue
        ids: list = []
        labels: list = []
        for piece_ids, trains in pieces:
            ids.extend(piece_ids)
            labels.extend(piece_ids if trains else [IGNORE] * len(piece_ids))
        if len(ids) > cfg.max_length:
            stats.truncated += 1
            ids, labels = _truncate(ids, cfg.max_length, cfg.truncation_side), \
                _truncate(labels, cfg.max_length, cfg.truncation_side)
        if all(x == IGNORE for x in labels):
            stats.dropped_truncated += 1  # the response was cut off entirely: nothing to learn
            continue
        out.append({"input_ids": ids, "labels": labels})
    return out


def _alpaca_pieces(row: Row, tok, cfg, stats: EncodeStats):
    c = cfg.columns
    instruction = _text(row, c.instruction)
    response = _text(row, c.output)
    inp = _text(row, c.input, required=False) or ""
    if not instruction.strip() or not response.strip():
        if cfg.empty_rows == "drop":
            return None
        raise DataError(f"{row.where}: empty {c.instruction!r} or {c.output!r}; remove the row or set "
                        f"data.empty_rows: drop")
    if stats.prompt_style == "chat":
        from llmtune.data.prompt_style import alpaca_messages

        return _render_chat(alpaca_messages(instruction, inp, response), tok, row, stats)
    try:
        prompt = render_alpaca_prompt(cfg.prompt_template, instruction, inp)
    except (KeyError, IndexError, ValueError) as exc:
        from llmtune.errors import RecipeError

        raise RecipeError(f"data.prompt_template: cannot fill it in ({type(exc).__name__}: {exc}); use only "
                          f"{{instruction}}, {{input}} and {{input_block}}, and write a literal brace as "
                          f"{{{{ or }}}}") from None
    prompt_ids = tok(prompt, add_special_tokens=True)["input_ids"]
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    response_ids = tok(response, add_special_tokens=False)["input_ids"] + eos
    return [(prompt_ids, False), (response_ids, True)]


def _chat_pieces(row: Row, tok, cfg, stats: EncodeStats):
    msgs = row.data.get(cfg.columns.messages)
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
        raise DataError(f"{row.where}: column {cfg.columns.messages!r} must be a list of "
                        f"{{role, content}} messages")
    if getattr(tok, "chat_template", None) is None:
        raise DataError(f"{row.where}: chat rows need a tokenizer with a chat template; this model's "
                        f"tokenizer has none (use alpaca fields, or a chat model)")
    return _render_chat(msgs, tok, row, stats)


def _render_chat(msgs, tok, row: Row, stats: EncodeStats):
    """Pieces of (ids, trains) with verified assistant masks (data/chat_masks.py)."""
    from llmtune.data.chat_masks import encode_chat

    try:
        enc = encode_chat(msgs, tok, row.where)
    except DataError:
        raise
    except Exception as exc:  # jinja2 raises from inside the model's own template
        raise DataError(f"{row.where}: the chat template could not render these messages "
                        f"({type(exc).__name__}: {exc}); check roles and contents") from None
    stats.assistant_masks[enc.source] = stats.assistant_masks.get(enc.source, 0) + 1
    stats.markers_failed += enc.markers_failed is not None
    pieces: list = []
    for token, trains in zip(enc.ids, enc.trains):
        if pieces and pieces[-1][1] == trains:
            pieces[-1][0].append(token)
        else:
            pieces.append(([token], trains))
    return pieces
