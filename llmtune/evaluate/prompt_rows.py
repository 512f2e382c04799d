"""Rows for prompting: the eval queries and the demonstration pool, each with its answer
(the gold label's verbaliser, or the reference response)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmtune.data.encode import label_id, label_names
from llmtune.errors import DataError, UserError


@dataclass
class PromptRow:
    key: str
    """The row's input text: a demonstration whose key equals the query's is never used."""
    fields: dict[str, Any]
    """What a template sees (see templates.query_fields)."""
    answer: str
    """The gold label's verbaliser, or the reference response."""
    where: str
    label: int | None = None
    chat: list[dict] | None = None
    """Chat rows: the messages before the answer turn."""


def resolve_verbalizers(labels: list[str], given: dict[str, str] | None) -> list[str]:
    """One word per label, in label-id order. Keys may be label names or label ids."""
    if given is None:
        return list(labels)
    by_id = {str(i): name for i, name in enumerate(labels)}
    unknown = [k for k in given if k not in labels and k not in by_id]
    if unknown:
        raise UserError(f"eval.verbalizers: unknown label(s) {', '.join(map(repr, unknown))}; the labels are "
                        f"{', '.join(labels)} (or their ids 0..{len(labels) - 1})")
    words = []
    for i, name in enumerate(labels):
        word = given.get(name, given.get(str(i)))
        if word is None:
            raise UserError(f"eval.verbalizers: no word for label {name!r}; give one word per label")
        words.append(word)
    if len(set(words)) != len(words):
        raise UserError(f"eval.verbalizers: two labels share a word ({', '.join(words)}); "
                        f"scoring could not tell them apart")
    return words


def _text(row, col: str) -> str:
    if col not in row.data:
        raise DataError(f"{row.where}: no column {col!r} (columns: {', '.join(map(str, row.data))}); "
                        f"map it with data.columns in the recipe")
    value = row.data[col]
    return "" if value is None else (value if isinstance(value, str) else str(value))


def classification_rows(rows, data_cfg, labels: list[str], words: list[str]) -> list[PromptRow]:
    from llmtune.evaluate.templates import query_fields

    c = data_cfg.columns
    out = []
    for row in rows:
        key = _text(row, c.text)
        if c.text_pair:
            key = f"{key}\n{_text(row, c.text_pair)}"
        if not key.strip():
            continue  # the supervised encoder reports empty rows; prompting just skips them
        y = label_id(row, _text(row, c.label), labels)
        out.append(PromptRow(key.strip(), query_fields(row.data, data_cfg), words[y], row.where, label=y))
    return out


def sft_rows(rows, data_cfg, alpaca_chat: bool = False) -> list[PromptRow]:
    """`alpaca_chat`: alpaca rows are prompted through the chat template (one user turn), as
    data.prompt_style trained them."""
    from llmtune.data.prompt_style import alpaca_messages
    from llmtune.evaluate.templates import query_fields

    c = data_cfg.columns
    chat = data_cfg.format == "chat" or (data_cfg.format == "auto" and rows and c.messages in rows[0].data)
    out = []
    for row in rows:
        if chat:
            item = _chat_row(row, c.messages)
        else:
            instruction, inp = _text(row, c.instruction), row.data.get(c.input) or ""
            key = f"{instruction}\n{inp}".strip()
            item = PromptRow(key, query_fields(row.data, data_cfg), _text(row, c.output), row.where,
                             chat=alpaca_messages(instruction, str(inp)) if alpaca_chat else None)
        if item is not None and item.key and item.answer.strip():
            out.append(item)
    return out


def _chat_row(row, col: str) -> PromptRow | None:
    msgs = row.data.get(col)
    if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m for m in msgs):
        raise DataError(f"{row.where}: column {col!r} must be a list of {{role, content}} messages")
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    before = msgs[:last]
    key = "\n".join(str(m.get("content", "")) for m in before).strip()
    return PromptRow(key, {}, str(msgs[last].get("content", "")), row.where, chat=before)


def load_rows(recipe) -> tuple[list, list, list[str] | None]:
    """(eval rows, demonstration pool rows, labels), split exactly as training splits them."""
    from llmtune.data.pipeline import read_source, read_splits

    d = recipe.data
    train, evals, _, _ = read_splits(d)
    labels = label_names(train, d.columns.label, d.labels) if d.task == "classification" else None
    demos = recipe.eval.demos
    pool = read_source(demos)[0] if demos is not None else train
    return (evals or train), pool, labels


def to_prompt_rows(rows, data_cfg, labels, words, alpaca_chat: bool = False) -> list[PromptRow]:
    if data_cfg.task == "classification":
        return classification_rows(rows, data_cfg, labels, words)
    return sft_rows(rows, data_cfg, alpaca_chat)
