"""`llmtune generate --input`: the prompts to answer, one per line, read lazily.

`.txt`: every non-blank line is a prompt (one user turn). `.jsonl`: every non-blank line is
one JSON object with `prompt` (a string: one user turn), `messages` (a conversation:
[{role, content}], rendered through the run's prompt format) or `instruction` (and optional
`input`: an alpaca row, rendered as training rendered alpaca rows); an `id` is echoed into
the answer. A line that is none of these stops the reading with file:line and what to write;
the rows before it have already been handed out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from llmtune.data.prompt_style import alpaca_user_turn
from llmtune.errors import DataError

SUFFIXES = (".jsonl", ".txt")
ROLES = ("system", "user", "assistant")


@dataclass
class PromptRow:
    line: int
    """1-based line of the input file: the row's identity in --out."""
    messages: list[dict]
    prompt: Any
    """What the answer row echoes as `prompt`: the text, the messages, or the instruction."""
    id: Any = None


def check_input(path: Path) -> None:
    if path.suffix not in SUFFIXES:
        raise DataError(f"--input {path}: a .jsonl file (one JSON object per line) or a .txt file (one prompt per "
                        f"line); got {path.suffix or 'no suffix'}")
    if not path.is_file():
        raise DataError(f"--input {path}: no such file")


def count_rows(path: Path) -> int:
    with path.open(encoding="utf-8", errors="replace") as f:
        return sum(1 for line in f if line.strip())


def read_rows(path: Path) -> Iterator[PromptRow]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if path.suffix == ".txt":
                text = line.rstrip("\r\n")
                yield PromptRow(n, [{"role": "user", "content": text}], text)
            else:
                yield _json_row(line, f"{path}:{n}", n)


def _json_row(line: str, where: str, n: int) -> PromptRow:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one object "
                        f"such as {{\"prompt\": \"...\"}}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: a JSON {type(obj).__name__}, not an object; write {{\"prompt\": \"...\"}}")
    rid = obj.get("id")
    if isinstance(obj.get("prompt"), str):
        return PromptRow(n, [{"role": "user", "content": obj["prompt"]}], obj["prompt"], rid)
    if "messages" in obj:
        return PromptRow(n, _messages(obj["messages"], where), obj["messages"], rid)
    if isinstance(obj.get("instruction"), str):
        inp = obj.get("input") or ""
        if not isinstance(inp, str):
            raise DataError(f"{where}: \"input\" must be a string")
        user = {"role": "user", "content": alpaca_user_turn(obj["instruction"], inp),
                "instruction": obj["instruction"], "input": inp}
        return PromptRow(n, [user], obj["instruction"] if not inp else {"instruction": obj["instruction"],
                                                                           "input": inp}, rid)
    keys = ", ".join(sorted(map(str, obj))) or "none"
    raise DataError(f"{where}: no prompt in this row (keys: {keys}); give \"prompt\" (a string), \"messages\" "
                    f"([{{\"role\": \"user\", \"content\": ...}}]) or \"instruction\" (and \"input\")")


def _messages(value: Any, where: str) -> list[dict]:
    ok = isinstance(value, list) and value and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in value)
    if not ok:
        raise DataError(f"{where}: \"messages\" must be a non-empty list of {{\"role\": system|user|assistant, "
                        f"\"content\": string}}")
    if value[-1]["role"] == "assistant":
        raise DataError(f"{where}: the last message is the assistant's; end with the user message to answer")
    return [{"role": m["role"], "content": m["content"]} for m in value]
