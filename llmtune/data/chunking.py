"""Text -> overlapping windows of the embedding model's tokens, with exact character offsets.

A window holds at most `chunk_tokens` tokens and starts at most `overlap` tokens before the
previous one ended. Boundaries fall between words where the window allows it (a window may
shrink to half its size to end at a word start) and always between tokens; a cut never
falls between two tokens that share a character (byte-level tokenizers split some
characters into several tokens). Offsets come from the fast tokenizer's offset mapping,
so `text[start:end]` is exactly the window's text.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtune.errors import UserError

BLOCK_CHARS = 1 << 16
"""Characters tokenized at a time when a long text is cut (`Chunker.iter_split`)."""


@dataclass
class Piece:
    start: int
    """Character offset of the window's first token."""
    end: int
    """Character offset just past its last token."""
    ids: list[int]
    """Its token ids, without special tokens."""


class Chunker:
    def __init__(self, tokenizer, chunk_tokens: int, overlap: int):
        if chunk_tokens < 1:
            raise UserError(f"--chunk-tokens {chunk_tokens}: must be at least 1")
        if not 0 <= overlap < chunk_tokens:
            raise UserError(f"--overlap {overlap}: must be at least 0 and below --chunk-tokens ({chunk_tokens})")
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(f"the model's tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer, so it has "
                            f"no offset mapping to chunk by; use a model with a tokenizer.json")
        self.tokenizer = tokenizer
        self.size = chunk_tokens
        self.overlap = overlap

    def split_many(self, texts: list[str]) -> list[list[Piece]]:
        """The pieces of each text (one batched tokenizer call for all of them)."""
        if not texts:
            return []
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                             return_attention_mask=False, return_token_type_ids=False, verbose=False)
        out = []
        for i in range(len(texts)):
            ids, offsets, words = enc["input_ids"][i], enc["offset_mapping"][i], enc.word_ids(i)
            out.append([Piece(offsets[a][0], offsets[b - 1][1], ids[a:b])
                        for a, b in windows(len(ids), self.size, self.overlap, _Bounds(offsets, words))])
        return out

    def split(self, text: str) -> list[Piece]:
        return self.split_many([text])[0]

    def iter_split(self, text: str, block_chars: int = BLOCK_CHARS):
        """The pieces of `split(text)`, made a block of text at a time, so a long text never
        has all its tokens (and their offsets) in memory at once.

        A block ends before a whitespace character, where no token spans the cut. Every
        window of a block is final except its last one (which the block's end cut short):
        the next block starts at that window's start, and the windows go on from there as
        they would over the whole text."""
        pos = 0
        while True:
            end = _block_end(text, pos, block_chars)
            pieces = self.split(text[pos:end])
            if end >= len(text) or len(pieces) < 2:
                last = len(pieces) if end >= len(text) else 1
                yield from (Piece(p.start + pos, p.end + pos, p.ids) for p in pieces[:last])
                if end >= len(text):
                    return
                pos += pieces[0].end if pieces else end - pos
                continue
            yield from (Piece(p.start + pos, p.end + pos, p.ids) for p in pieces[:-1])
            pos += pieces[-1].start


def _block_end(text: str, pos: int, block_chars: int) -> int:
    """Where a block starting at `pos` ends: before the first whitespace past `block_chars`
    characters (the text's end if there is none within another `block_chars`)."""
    target = pos + block_chars
    if target >= len(text):
        return len(text)
    limit = min(len(text), target + block_chars)
    for i in range(target, limit):
        if text[i].isspace():
            return i
    return limit


class _Bounds:
    """Which token positions a window may start or end at."""

    def __init__(self, offsets, words):
        self.offsets = offsets
        self.words = words

    def between_chars(self, i: int) -> bool:
        return self.offsets[i][0] >= self.offsets[i - 1][1]

    def word_start(self, i: int) -> bool:
        w = self.words
        return (w[i] is None or w[i] != w[i - 1]) and self.between_chars(i)


def windows(n: int, size: int, overlap: int, bounds: _Bounds) -> list[tuple[int, int]]:
    """[(first token, one past the last)] covering 0..n."""
    out: list[tuple[int, int]] = []
    start = 0
    while start < n:
        if start + size >= n:
            out.append((start, n))
            break
        end = _end_before(start + size, start, size, bounds)
        out.append((start, end))
        start = _start_after(max(end - overlap, start + 1), end, bounds)
    return out


def _end_before(limit: int, start: int, size: int, bounds: _Bounds) -> int:
    """The last word start in (start + size/2, limit], else the last cut between characters."""
    for i in range(limit, start + max(1, size // 2), -1):
        if bounds.word_start(i):
            return i
    for i in range(limit, start, -1):
        if bounds.between_chars(i):
            return i
    return limit  # one character longer than the window: nothing better exists


def _start_after(lo: int, end: int, bounds: _Bounds) -> int:
    """The first word start in [lo, end]; `end` itself is always a valid cut."""
    for i in range(lo, end):
        if bounds.word_start(i):
            return i
    for i in range(lo, end):
        if bounds.between_chars(i):
            return i
    return end


def special_tokens(tok) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text ([CLS] / [SEP] for BERT)."""
    with_sp = tok("a", add_special_tokens=True)["input_ids"]
    bare = tok("a", add_special_tokens=False)["input_ids"]
    for pos in range(len(with_sp) - len(bare) + 1):
        if with_sp[pos:pos + len(bare)] == bare:
            return with_sp[:pos], with_sp[pos + len(bare):]
    return [], []
