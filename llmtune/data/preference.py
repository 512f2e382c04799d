"""Rows for preference and RL methods, in the forms trl's trainers read.

Three tasks, each normalised to one row shape (plain text or chat messages, never mixed
within a file):
- `preference`: {prompt, chosen, rejected}. Accepted as prompt/chosen/rejected columns; as
  chat messages (full conversations or prompt + responses, role/content or ShareGPT
  from/value keys); or as HH-RLHF transcripts (`\\n\\nHuman: ...\\n\\nAssistant: ...`)
  that share everything up to the last assistant turn.
- `unpaired_preference` (KTO): {prompt, completion, label}. Accepted as prompt + completion
  + a boolean column; as a chat `messages` column whose last assistant turn is the
  completion; or as preference pairs, each unpaired into a desirable and an undesirable row.
- `prompts` (online RL): {prompt} plus any other scalar columns (passed to reward
  functions). Accepted as a prompt column, a `messages` column (a trailing assistant turn
  is dropped), or HH-RLHF transcripts (the prompt part).

Every problem names the row (file:line or file row N) and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmtune.data.readers import Row
from llmtune.errors import DataError

HH_MARKER = "\n\nAssistant:"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "bot": "assistant",
         "model": "assistant", "system": "system", "tool": "tool", "function": "tool"}
TASK_FIELDS = {"preference": ("prompt", "chosen", "rejected"), "unpaired_preference": ("prompt", "completion", "label"),
               "prompts": ("prompt",)}


@dataclass
class PreferenceData:
    train: list[dict]
    eval: list[dict]
    chat: bool
    """True when rows hold chat messages (the tokenizer's chat template renders them)."""
    fingerprint: dict[str, str]
    summary: dict = field(default_factory=dict)


def load_preference_data(data_cfg) -> PreferenceData:
    """Read, split and normalise the recipe's rows for its preference/RL task."""
    from llmtune.data.pipeline import read_splits

    train_rows, eval_rows, train_fp, eval_fp = read_splits(data_cfg)
    summary = {"train_rows": len(train_rows), "eval_rows": len(eval_rows), "dropped_empty": 0}
    train = normalise(train_rows, data_cfg, summary)
    evals = normalise(eval_rows, data_cfg, summary) if eval_rows else []
    if not train:
        raise DataError(f"{data_cfg.train.path or data_cfg.train.hub}: no usable training rows")
    chat = _is_chat(train[0])
    if evals and _is_chat(evals[0]) != chat:
        raise DataError(f"{eval_rows[0].where}: eval rows are {'chat messages' if not chat else 'plain text'} but "
                        f"training rows are not; use one form for both")
    return PreferenceData(train, evals, chat, {"train": train_fp, "eval": eval_fp}, summary)


def normalise(rows: list[Row], data_cfg, summary: dict | None = None) -> list[dict]:
    """Rows of `data_cfg.task` in trl's shape; empty rows dropped or refused per data.empty_rows."""
    convert = {"preference": preference_rows, "unpaired_preference": unpaired_rows,
               "prompts": prompt_rows}.get(data_cfg.task)
    if convert is None:
        raise DataError(f"data.task {data_cfg.task!r} is not a preference/RL task")
    out, wheres, dropped = [], [], 0
    for row in rows:
        try:
            made = convert(row, data_cfg.columns)
        except _EmptyRow as exc:
            if data_cfg.empty_rows != "drop":
                raise DataError(f"{row.where}: {exc}; remove the row or set data.empty_rows: drop") from None
            dropped += 1
            continue
        out.extend(made)
        wheres.extend([row.where] * len(made))
    if summary is not None:
        summary["dropped_empty"] = summary.get("dropped_empty", 0) + dropped
    _check_one_form(out, wheres)
    if data_cfg.task == "prompts":
        _fill_extras(out)
    return out


class _EmptyRow(Exception):
    pass


# -- messages -------------------------------------------------------------------------------
def is_messages(value: Any) -> bool:
    if isinstance(value, dict):
        return ("role" in value or "from" in value) and ("content" in value or "value" in value)
    return isinstance(value, list) and bool(value) and all(is_messages(m) and isinstance(m, dict) for m in value)


def messages(value: Any, where: str, col: str) -> list[dict]:
    """A list of {role, content}: from a message or a list of them, with role/content or
    ShareGPT from/value keys, and content as text or a list of text parts."""
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not items:
        raise DataError(f"{where}: column {col!r} must be text or chat messages ({{role, content}}), "
                        f"got {type(value).__name__}")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, dict):
            raise DataError(f"{where}: column {col!r} message {i} is a {type(m).__name__}, not a "
                            f"{{role, content}} mapping")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if str(role).lower() not in ROLES:
            raise DataError(f"{where}: column {col!r} message {i} has role {role!r}; expected one of "
                            f"user, assistant, system (or ShareGPT human, gpt)")
        out.append({"role": ROLES[str(role).lower()], "content": _content_text(content, where, col)})
    return out


def _content_text(content: Any, where: str, col: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal-style parts: keep the text ones
        parts = [p.get("text", p.get("value", "")) for p in content if isinstance(p, dict) and
                 p.get("type", "text") == "text"]
        return "".join(str(p) for p in parts)
    raise DataError(f"{where}: column {col!r} has message content of type {type(content).__name__}")


def _is_chat(row: dict) -> bool:
    return isinstance(row.get("prompt"), list) or isinstance(row.get("chosen"), list) or \
        isinstance(row.get("completion"), list)


def _empty(value) -> bool:
    if isinstance(value, list):
        return not value or all(not str(m.get("content", "")).strip() for m in value)
    return not str(value).strip()


def _common_prefix(a: list[dict], b: list[dict]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# -- preference pairs -----------------------------------------------------------------------
def _get(row: Row, col: str, what: str):
    if col not in row.data:
        raise DataError(f"{row.where}: no column {col!r} for the {what} (columns: {', '.join(map(str, row.data))}); "
                        f"map it with data.columns.{what}")
    return row.data[col]


def split_hh(chosen: str, rejected: str, where: str) -> tuple[str, str, str]:
    """HH-RLHF transcripts: the prompt is the shared text up to and including the last
    `\\n\\nAssistant:` that both transcripts contain."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(HH_MARKER, 0, n)
    if cut < 0:
        raise DataError(f"{where}: the chosen and rejected transcripts share no '\\n\\nAssistant:' turn; give a "
                        f"prompt column (data.columns.prompt) or transcripts that differ only in the last reply")
    end = cut + len(HH_MARKER)
    return chosen[:end], chosen[end:], rejected[end:]


def preference_rows(row: Row, c) -> list[dict]:
    chosen = _get(row, c.chosen, "chosen")
    rejected = _get(row, c.rejected, "rejected")
    prompt = row.data.get(c.prompt)
    if any(is_messages(v) for v in (chosen, rejected, prompt) if v is not None):
        return [_chat_pair(row, c, prompt, chosen, rejected)]
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise DataError(f"{row.where}: columns {c.chosen!r} and {c.rejected!r} must both be text or both be chat "
                        f"messages")
    if prompt is None:
        if HH_MARKER not in chosen:
            raise DataError(f"{row.where}: no prompt column {c.prompt!r} and the texts are not HH-RLHF "
                            f"transcripts ('\\n\\nHuman: ...\\n\\nAssistant: ...'); map data.columns.prompt")
        prompt, chosen, rejected = split_hh(chosen, rejected, row.where)
    prompt = str(prompt)
    if _empty(chosen) or _empty(rejected):
        raise _EmptyRow("empty chosen or rejected response")
    return [{"prompt": prompt, "chosen": chosen, "rejected": rejected}]


def _chat_pair(row: Row, c, prompt, chosen, rejected) -> dict:
    def as_msgs(value, col, role="assistant"):
        if isinstance(value, str):
            return [{"role": role, "content": value}]
        return messages(value, row.where, col)

    ch, rj = as_msgs(chosen, c.chosen), as_msgs(rejected, c.rejected)
    if prompt is not None:
        pr = as_msgs(prompt, c.prompt, role="user")
        # Responses given as whole conversations repeat the prompt: keep only what follows it.
        if ch[: len(pr)] == pr and rj[: len(pr)] == pr:
            ch, rj = ch[len(pr):], rj[len(pr):]
    else:
        n = _common_prefix(ch, rj)
        while n and ch[n - 1]["role"] == "assistant" and n == min(len(ch), len(rj)):
            n -= 1  # identical replies: keep the last turn as the (tied) response
        pr, ch, rj = ch[:n], ch[n:], rj[n:]
        if not pr:
            raise DataError(f"{row.where}: the chosen and rejected conversations share no prompt; give a prompt "
                            f"column (data.columns.prompt)")
    if _empty(ch) or _empty(rj):
        raise _EmptyRow("empty chosen or rejected response")
    return {"prompt": pr, "chosen": ch, "rejected": rj}


# -- unpaired (KTO) -------------------------------------------------------------------------
_TRUE = {"true", "1", "yes", "y", "desirable", "good", "chosen", "t"}
_FALSE = {"false", "0", "no", "n", "undesirable", "bad", "rejected", "f"}


def parse_label(value: Any, where: str, col: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DataError(f"{where}: column {col!r} is {value!r}; KTO labels are booleans (true/false, 1/0) saying "
                    f"whether the completion is desirable")


def unpaired_rows(row: Row, c) -> list[dict]:
    data = row.data
    if c.completion in data:
        prompt, completion = data.get(c.prompt), data[c.completion]
        if prompt is None and isinstance(completion, str) and HH_MARKER in completion:
            cut = completion.rfind(HH_MARKER) + len(HH_MARKER)
            prompt, completion = completion[:cut], completion[cut:]
        if prompt is None:
            raise DataError(f"{row.where}: no prompt column {c.prompt!r}; map data.columns.prompt")
        if is_messages(prompt) or is_messages(completion):
            prompt = messages(prompt, row.where, c.prompt) if not isinstance(prompt, str) else \
                [{"role": "user", "content": prompt}]
            completion = messages(completion, row.where, c.completion) if not isinstance(completion, str) else \
                [{"role": "assistant", "content": completion}]
    elif c.messages in data:
        msgs = messages(data[c.messages], row.where, c.messages)
        if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
            raise DataError(f"{row.where}: column {c.messages!r} must end with an assistant message (the "
                            f"completion the label judges)")
        prompt, completion = msgs[:-1], msgs[-1:]
    elif c.chosen in data and c.rejected in data:
        pair = preference_rows(row, c)[0]
        return [{"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
                {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False}]
    else:
        raise DataError(f"{row.where}: unpaired preference rows need a completion column {c.completion!r} (or "
                        f"{c.messages!r} chat messages, or {c.chosen!r}/{c.rejected!r} pairs); columns here: "
                        f"{', '.join(map(str, data))}. Map them with data.columns")
    label = parse_label(_get(row, c.desirable, "desirable"), row.where, c.desirable)
    if _empty(completion):
        raise _EmptyRow("empty completion")
    return [{"prompt": prompt, "completion": completion, "label": label}]


# -- prompts (online RL) --------------------------------------------------------------------
def prompt_rows(row: Row, c) -> list[dict]:
    data = row.data
    used = {c.prompt}
    if c.prompt in data:
        prompt = data[c.prompt]
        if not isinstance(prompt, str):
            prompt = messages(prompt, row.where, c.prompt)
    elif c.messages in data:
        used.add(c.messages)
        prompt = messages(data[c.messages], row.where, c.messages)
        if prompt[-1]["role"] == "assistant":
            prompt = prompt[:-1]  # the reference reply is not part of the prompt
        if not prompt:
            raise _EmptyRow("no message before the assistant's")
    elif c.chosen in data and isinstance(data[c.chosen], str) and HH_MARKER in data[c.chosen]:
        used |= {c.chosen, c.rejected}
        text = data[c.chosen]
        prompt = text[: text.rfind(HH_MARKER) + len(HH_MARKER)]
    else:
        raise DataError(f"{row.where}: no prompt column {c.prompt!r} (columns: {', '.join(map(str, data))}); map "
                        f"data.columns.prompt, or give chat messages in {c.messages!r}")
    if _empty(prompt):
        raise _EmptyRow("empty prompt")
    extras = {k: v for k, v in data.items() if k not in used and k != "prompt" and _scalar(v)}
    return [{"prompt": prompt, **extras}]


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _fill_extras(rows: list[dict]) -> None:
    """Extra columns reach reward functions as keyword arguments; every row gets every key
    (None where a row lacks it) so the table has one schema."""
    keys = {k for r in rows for k in r if k != "prompt"}
    for r in rows:
        for k in keys:
            r.setdefault(k, None)


def _check_one_form(out: list[dict], wheres: list[str]) -> None:
    if not out:
        return
    first = _is_chat(out[0])
    for where, r in zip(wheres, out):
        if _is_chat(r) != first:
            raise DataError(f"{where}: this row is {'chat messages' if not first else 'plain text'} but the first "
                            f"row is not; use one form throughout the file")
