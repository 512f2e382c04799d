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
    text: str | None = None
    """Its text, when the whole text is not kept (`Chunker.iter_split_stream`)."""


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
        has all its tokens (and their offsets) in memory at once."""
        return self.iter_split_stream([text], block_chars)

    def iter_split_stream(self, parts, block_chars: int = BLOCK_CHARS):
        """The pieces of `split("".join(parts))`, each with its `text`, read from `parts` (an
        iterable of strings of any sizes: a file decoded as it is read) only as far as the
        current block needs, so neither the text nor its tokens are ever in memory whole.

        A block ends before a whitespace character, where no token spans the cut. Every
        window of a block is final except its last one (which the block's end cut short); the
        next block starts at the start of the word that window starts in (a word is tokenized
        the same wherever the text around it is cut) and its windows go on from that window's
        first token, as they would over the whole text. A block too short for two windows is
        read again twice as long."""
        text = _Window(iter(parts))
        pos, first, size = 0, 0, block_chars
        while True:
            end = text.block_end(pos, size)
            at_end = text.ends_at(end)
            pieces, resume = self._cut(text.slice(pos, end), first - pos)
            if at_end:
                yield from (text.piece(p, pos) for p in pieces)
                return
            if not pieces:  # nothing but untokenized whitespace from `first` to the block's end
                pos = first = end
            elif len(pieces) == 1:
                size *= 2
                continue
            else:
                yield from (text.piece(p, pos) for p in pieces[:-1])
                pos, first = pos + resume[0], pos + resume[1]
            size = block_chars
            text.drop_before(pos)

    def _cut(self, text: str, skip: int) -> tuple[list[Piece], tuple[int, int]]:
        """The windows of `text` from its first token at or after character `skip`, and where
        the next block resumes: (the start of the last window's word, the last window's start)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                             return_attention_mask=False, return_token_type_ids=False, verbose=False)
        ids, offsets, words = enc["input_ids"], enc["offset_mapping"], enc.word_ids()
        first = next((t for t, (a, _) in enumerate(offsets) if a >= skip), len(ids))
        cuts = windows(len(ids), self.size, self.overlap, _Bounds(offsets, words), first)
        pieces = [Piece(offsets[a][0], offsets[b - 1][1], ids[a:b]) for a, b in cuts]
        if not cuts:
            return pieces, (len(text), len(text))
        last = word = cuts[-1][0]
        while word > 0 and words[word] is not None and words[word] == words[word - 1]:
            word -= 1
        return pieces, (offsets[word][0], offsets[last][0])


class _Window:
    """The part of a streamed text that the chunker still needs: from the current block's start
    to at least one character past where that block may end (or the text's end)."""

    def __init__(self, parts):
        self.parts = parts
        self.buf = ""
        self.base = 0
        """Offset in the whole text of `buf[0]`."""
        self.done = False

    def _have(self, end: int) -> None:
        """Read parts until the window reaches offset `end` or the text ends."""
        more = []
        size = self.base + len(self.buf)
        while size < end and not self.done:
            part = next(self.parts, None)
            if part is None:
                self.done = True
            else:
                more.append(part)
                size += len(part)
        if more:
            self.buf += "".join(more)

    def block_end(self, pos: int, block_chars: int) -> int:
        """Where a block starting at `pos` ends: before the first whitespace past `block_chars`
        characters (the text's end if there is none within another `block_chars`)."""
        target = pos + block_chars
        self._have(target + block_chars + 1)  # +1: whether the text ends exactly there
        length = self.base + len(self.buf)
        if target >= length:
            return length
        limit = min(length, target + block_chars)
        for i in range(target, limit):
            if self.buf[i - self.base].isspace():
                return i
        return limit

    def ends_at(self, end: int) -> bool:
        return self.done and end >= self.base + len(self.buf)

    def slice(self, start: int, end: int) -> str:
        return self.buf[start - self.base:end - self.base]

    def piece(self, p: "Piece", pos: int) -> "Piece":
        start, end = p.start + pos, p.end + pos
        return Piece(start, end, p.ids, self.slice(start, end))

    def drop_before(self, pos: int) -> None:
        self.buf = self.buf[pos - self.base:]
        self.base = pos


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


def windows(n: int, size: int, overlap: int, bounds: _Bounds, start: int = 0) -> list[tuple[int, int]]:
    """[(first token, one past the last)] covering start..n."""
    out: list[tuple[int, int]] = []
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
