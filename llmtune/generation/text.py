"""Generated token ids -> the text deltas a reader sees, cut at stop strings.

Decoding a growing id list afresh every step costs O(n) per token; instead each step decodes
only a short window (from `prefix_offset`) and emits what the newest tokens added to it. A
window that ends in an unfinished UTF-8 character (byte-level BPE splits characters across
tokens) decodes to U+FFFD, so that text waits for the next token. Text that could still turn
into a stop string is held back too, so a stop string never reaches the reader, and the
deltas always add up to the final answer.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


class TextStream:
    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tok = tokenizer
        self.stop = tuple(stop)
        self.ids: list[int] = []
        self.text = ""  # everything decoded so far
        self.sent = 0  # how much of self.text has been handed out
        self.prefix_offset = 0
        self.read_offset = 0
        self.stopped = False
        """A stop string was found: self.text now ends before it."""

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token_id: int) -> str:
        """Take one generated token; return the text now safe to hand out (may be empty)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix_offset:self.read_offset])
        after = self._decode(self.ids[self.prefix_offset:])
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""  # nothing yet, or half a character
        added = after[len(before):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        searched_from = max(self.sent, len(self.text) - max((len(s) for s in self.stop), default=0))
        self.text += added
        if self._cut_at_stop(searched_from):
            return self._take(len(self.text))
        return self._take(len(self.text) - self._holdback())

    def finish(self) -> str:
        """The text still held back, once no more tokens come (a partial stop string that
        never completed, a character left unfinished)."""
        if not self.stopped:
            tail = self._decode(self.ids[self.prefix_offset:])
            before = self._decode(self.ids[self.prefix_offset:self.read_offset])
            if len(tail) > len(before):
                self.text += tail[len(before):]  # half a character at the end stays as decode shows it
                self.prefix_offset = self.read_offset = len(self.ids)
        return self._take(len(self.text))

    def _cut_at_stop(self, start: int) -> bool:
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if not hits:
            return False
        self.text = self.text[:min(hits)]
        self.stopped = True
        return True

    def _holdback(self) -> int:
        """Length of the longest end of the text that is the start of a stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text) - self.sent), longest, -1):
                if self.text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _take(self, upto: int) -> str:
        upto = max(upto, self.sent)
        out = self.text[self.sent:upto]
        self.sent = upto
        return out
