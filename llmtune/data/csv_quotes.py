"""Find a quoted CSV field that never closes.

Python's csv reader (non-strict, as llmtune reads CSV) takes a quote that is never closed
as one field holding every line after it, to the end of the file, and says nothing unless
that text is over its field size limit. A record can only run on like that to the end of
the file, so the readers keep the raw lines of the record being read (RecordLines) and ask
`unclosed_quote_line` about the last one.
"""

from __future__ import annotations

import csv
from typing import Iterable, Iterator

from llmtune.errors import DataError


class RecordLines:
    """Wraps the lines given to csv.reader and keeps those of the record being read: the
    reader pulls lines only until a record is complete, so after a row it holds that row's.
    It reads one line ahead, so that `at_end` says whether a record reached the last line
    (only such a record needs the quote scan)."""

    def __init__(self, lines: Iterable[str]):
        self._lines = iter(lines)
        self._ahead = next(self._lines, None)
        self.current: list[str] = []
        self.start = 1
        """The line number (from 1) the current record begins on."""

    @property
    def at_end(self) -> bool:
        return self._ahead is None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._ahead is None:
            raise StopIteration
        line, self._ahead = self._ahead, next(self._lines, None)
        self.current.append(line)
        return line


def records(reader, lines: RecordLines, path):
    """reader's rows, the header first, with `lines` reset before each so that it holds only
    that row's lines. Where the reader's fields may be quoted (CSV, not TSV), a row that ran
    to the end of the file on a quote that never closed is a DataError naming that line."""
    quoted = reader.dialect.quoting != csv.QUOTE_NONE
    while True:
        lines.start, lines.current = reader.line_num + 1, []
        try:
            values = next(reader)
        except StopIteration:
            return
        if quoted:
            refuse_unclosed_quote(path, lines, reader.dialect.delimiter)
        yield values


def unclosed_quote_line(lines: RecordLines, delimiter: str, quote: str = '"') -> int | None:
    """The line on which the current record's quoted field opened, when that field never
    closed (the record ran to the end of the file); None when every quote closed.

    The same states as CPython's csv parser with doublequote on, strict off: a quote opens a
    quoted field only at the start of a field; inside one, a doubled quote is a literal
    quote and a single quote closes it; after the closing quote, anything but a delimiter
    or a line end continues the field unquoted."""
    if not any(quote in line for line in lines.current):
        return None
    state, opened = "start", 0
    for index, line in enumerate(lines.current):
        for c in line:
            if state == "start":
                if c == quote:
                    state, opened = "quoted", index
                elif c != delimiter and c not in "\r\n":
                    state = "field"
            elif state == "field":
                if c == delimiter or c in "\r\n":
                    state = "start"
            elif state == "quoted":
                if c == quote:
                    state = "closing"
            elif c == quote:  # "closing": a doubled quote is a literal one
                state = "quoted"
            elif c == delimiter or c in "\r\n":
                state = "start"
            else:
                state = "field"
    return lines.start + opened if state == "quoted" else None  # opened is set whenever state is "quoted"


def refuse_unclosed_quote(path, lines: RecordLines, delimiter: str) -> None:
    """A DataError naming the line where the current record's never-closed quote opened."""
    if not lines.at_end:
        return  # a record that stopped before the last line closed its quotes
    opened = unclosed_quote_line(lines, delimiter)
    if opened is not None:
        last = lines.start + len(lines.current) - 1
        swallowed = f", lines {opened}-{last}," if last > opened else ""
        raise DataError(f"{path}:{opened}: a quote opened on this line never closes (csv would read the rest "
                        f"of the file{swallowed} as this one field); close it (a quote inside a quoted field "
                        f"is written twice: \"\") or remove the stray one")


def opened_on(lines: RecordLines, reader) -> str:
    """For csv's own errors (a field over its size limit): where a never-closed quote opened."""
    if reader.dialect.quoting == csv.QUOTE_NONE:
        return ""
    opened = unclosed_quote_line(lines, reader.dialect.delimiter)
    return "" if opened is None else f"; the quoted field that opens on line {opened} never closes"
