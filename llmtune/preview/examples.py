"""The recipe's examples after the whole data pipeline, as token sequences with a loss mask.

Supervised tasks (classification, causal_lm, sft) come from `prepare_data`, exactly what
the training loop gets (read from the tokenized cache when it is there, never written to
it). Preference and RL tasks come from the same readers the trl-backed methods use, then
tokenized the way trl 1.16 tokenizes them: the prompt alone and prompt + completion, with
the completion starting where the two stop agreeing (so a template that renders the prompt
differently in the two cases shows up as a short prompt here too)."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmtune.data.encode import IGNORE


@dataclass
class Sequence:
    ids: list[int]
    trains: list[bool] | None
    """Per token: does the loss train on it. None: no per-token loss (a classifier's input,
    a sequence a reward model scores, an RL prompt)."""
    title: str = ""
    label: str | None = None
    """Classification: the label id and name; KTO: desirable or undesirable."""


@dataclass
class Example:
    sequences: list[Sequence]


@dataclass
class PreviewData:
    """One split's examples plus what the pipeline counted about all its rows."""

    examples: list[Example]
    summary: dict
    notes: list[str] = field(default_factory=list)
    train_raw: list[dict] | None = None
    """Supervised tasks: the training examples as the loop gets them (for --time)."""


def supervised(recipe, tok, split: str) -> PreviewData:
    from llmtune.data.pipeline import prepare_data

    data = prepare_data(recipe.data, tok, store_cache=False)
    rows = data.train if split == "train" else data.eval
    task = recipe.data.task
    out = []
    for ex in rows:
        if task == "classification":
            y = ex["label"]
            name = data.labels[y] if data.labels else str(y)
            seq = Sequence(ex["input_ids"], None, label=f"{y} ({name})")
        else:
            seq = Sequence(ex["input_ids"], [y != IGNORE for y in ex["labels"]])
        out.append(Example([seq]))
    summary = {**data.summary, "labels": data.labels}
    return PreviewData(out, summary, train_raw=data.train)


def preference(recipe, tok, split: str, method) -> PreviewData:
    """Rows of a preference/RL task as the method's trainer will tokenize them."""
    from llmtune.data.preference import load_preference_data

    data = load_preference_data(recipe.data)
    rows = data.train if split == "train" else data.eval
    rows = method.prepare_rows(rows, tok, recipe) if rows else []
    max_length = recipe.data.max_length
    examples, truncated, dropped = [], 0, 0
    scores_whole = method.model_kind == "reward"
    for row in rows:
        if "chosen" in row:
            seqs = _paired(row, tok, scores_whole)
        elif "completion" in row:
            seqs = [_prompted(row["prompt"], row["completion"], tok,
                              label="desirable" if row["label"] else "undesirable")]
        else:
            seqs = [Sequence(_prompt_ids(row["prompt"], tok), None, "prompt")]
        if scores_whole and any(len(s.ids) > max_length for s in seqs):
            dropped += 1  # trl's reward trainer leaves over-long pairs out
            continue
        if any(len(s.ids) > max_length for s in seqs):
            truncated += 1
            seqs = [_cut(s, max_length, recipe.data.truncation_side) for s in seqs]
        examples.append(Example(seqs))
    summary = {**data.summary, "truncated": truncated, "dropped_too_long": dropped, "chat": data.chat}
    notes = []
    if recipe.data.task == "prompts":
        notes.append("online RL: only prompts are tokenized here; the completions are generated during training "
                     "and scored by the reward")
    if scores_whole:
        notes.append("reward model: each whole sequence is scored at its last token (no per-token loss); pairs "
                     "longer than data.max_length are dropped by the trainer")
    return PreviewData(examples, summary, notes)


def _paired(row: dict, tok, scores_whole: bool) -> list[Sequence]:
    prompt = row["prompt"]
    if scores_whole:
        return [Sequence(_full_ids(prompt, row[k], tok), None, k) for k in ("chosen", "rejected")]
    chosen, rejected = (_prompted(prompt, row[k], tok, title=k) for k in ("chosen", "rejected"))
    # trl starts both completions where the shorter agreement with the prompt ends.
    start = min(chosen.trains.index(True) if True in chosen.trains else len(chosen.ids),
                rejected.trains.index(True) if True in rejected.trains else len(rejected.ids))
    for seq in (chosen, rejected):
        seq.trains = [i >= start for i in range(len(seq.ids))]
    return [chosen, rejected]


def _prompt_ids(prompt, tok) -> list[int]:
    if isinstance(prompt, list):
        return list(tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                            return_dict=True)["input_ids"])
    return list(tok(text=prompt)["input_ids"])


def _full_ids(prompt, completion, tok) -> list[int]:
    """Prompt + completion: chat messages through the template, text with EOS added (as trl does)."""
    if isinstance(prompt, list):
        return list(tok.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"])
    eos = tok.eos_token or ""
    return list(tok(text=prompt + (completion if completion.endswith(eos) else completion + eos))["input_ids"])


def _prompted(prompt, completion, tok, title: str = "", label: str | None = None) -> Sequence:
    prompt_ids, ids = _prompt_ids(prompt, tok), _full_ids(prompt, completion, tok)
    agree = 0
    while agree < min(len(prompt_ids), len(ids)) and prompt_ids[agree] == ids[agree]:
        agree += 1
    return Sequence(ids, [i >= agree for i in range(len(ids))], title, label)


def _cut(seq: Sequence, max_length: int, side: str) -> Sequence:
    if len(seq.ids) <= max_length:
        return seq
    keep = slice(-max_length, None) if side == "left" else slice(0, max_length)
    return Sequence(seq.ids[keep], seq.trains[keep] if seq.trains is not None else None, seq.title, seq.label)
