"""Token-by-token views of preview sequences: rich colours on a terminal, plain markers in a
log or a pipe, and JSON.

Plain form (documented in docs/preview.md): tokens are separated by `|`; `[[` and `]]`
enclose each run of tokens the loss trains on; special tokens are shown as `«<s>»`; a soft
prompt's virtual tokens as one `«N virtual tokens»` mark in front; newlines, tabs and
carriage returns inside a token as `\\n`, `\\t`, `\\r`."""

from __future__ import annotations

LEGEND = ("tokens are separated by |; [[ ]] encloses the tokens the loss trains on; «...» marks special tokens "
          "and virtual tokens")
TRAIN_OPEN, TRAIN_CLOSE, SEP = "[[", "]]", "|"


def special_ids(tok) -> set[int]:
    ids = set(getattr(tok, "all_special_ids", []) or [])
    for idx, added in getattr(tok, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(idx)
    return ids


def token_texts(tok, ids: list[int]) -> list[str]:
    return [tok.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]


def visible(text: str) -> str:
    return text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def plain_tokens(seq, texts: list[str], special: set[int], virtual: int = 0) -> str:
    parts = [f"«{virtual} virtual tokens»"] if virtual else []
    inside = False
    for i, (tid, text) in enumerate(zip(seq.ids, texts)):
        piece = f"«{visible(text)}»" if tid in special else visible(text)
        trains = bool(seq.trains and seq.trains[i])
        if trains and not inside:
            piece, inside = TRAIN_OPEN + piece, True
        elif not trains and inside:
            parts[-1] += TRAIN_CLOSE
            inside = False
        parts.append(piece)
    if inside:
        parts[-1] += TRAIN_CLOSE
    return SEP.join(parts)


def rich_tokens(seq, texts: list[str], special: set[int], virtual: int = 0):
    """A rich Text: trained tokens on green, the others on grey, shades alternating so
    token boundaries show; special tokens bold magenta; virtual tokens cyan."""
    from rich.text import Text

    out = Text()
    if virtual:
        out.append(f"«{virtual} virtual tokens»", style="bold cyan")
    for i, (tid, text) in enumerate(zip(seq.ids, texts)):
        trains = bool(seq.trains and seq.trains[i])
        shade = ("on dark_green", "on green4") if trains else ("on grey19", "on grey30")
        style = shade[i % 2] + (" bold magenta" if tid in special else "")
        out.append(visible(text), style=style)
    return out


def headline(seq) -> str:
    trained = f", {sum(seq.trains)} trained" if seq.trains is not None else ""
    label = f", label {seq.label}" if seq.label else ""
    title = f"{seq.title}: " if seq.title else ""
    return f"{title}{len(seq.ids)} tokens{trained}{label}"


def example_json(example, tok, special: set[int]) -> dict:
    seqs = []
    for seq in example.sequences:
        texts = token_texts(tok, seq.ids)
        tokens = [{"id": tid, "text": text, "train": None if seq.trains is None else bool(seq.trains[i]),
                   "special": tid in special} for i, (tid, text) in enumerate(zip(seq.ids, texts))]
        seqs.append({"title": seq.title or None, "label": seq.label, "length": len(seq.ids),
                     "trained_tokens": None if seq.trains is None else sum(seq.trains),
                     "text": tok.decode(seq.ids, skip_special_tokens=False), "tokens": tokens})
    return {"sequences": seqs}
