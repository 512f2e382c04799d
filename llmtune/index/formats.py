"""A file's bytes -> its text sections, by suffix.

| suffix | sections | offsets index into |
| --- | --- | --- |
| .txt, .md | one: the file's text | the decoded file (after a UTF-8 byte-order mark) |
| .html, .htm | one: the visible text (markup, scripts and styles dropped by BeautifulSoup) | the extracted text |
| .pdf | one per page with text (pypdf) | that page's extracted text |
| .jsonl, .csv, .tsv, .parquet | one per row: the text column | that row's text |

A file that cannot be read as its suffix says raises `Unreadable` with the reason; the
index run reports it and moves on.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

from llmtune.errors import UserError

KINDS = {".txt": "text", ".md": "text", ".markdown": "text", ".html": "html", ".htm": "html", ".pdf": "pdf",
         ".jsonl": "table", ".csv": "table", ".tsv": "table", ".parquet": "table"}
SUPPORTED = ", ".join(sorted(KINDS))
DROPPED_TAGS = ("script", "style", "noscript", "template", "svg", "head")
BLOCK_TAGS = ("p", "div", "br", "li", "dt", "dd", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
              "blockquote", "section", "article", "header", "footer", "nav", "aside", "main", "figure",
              "figcaption", "table", "ul", "ol", "dl", "hr", "title", "form", "address")


class Hasher(Protocol):
    """A hashlib object."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


READ_BYTES = 1 << 20
"""Bytes read at a time from a plain-text file (`stream_text`)."""


@dataclass
class Section:
    text: str
    locator: str = ""
    """Where in the file: "" (the whole file), "page=3", "row=17" or "<id column>=<id>"."""
    parts: Callable[[], Iterator[str]] | None = None
    """A plain-text file's text, decoded a block at a time as it is read (`text` is then "",
    and `length` its length): a big file is never in memory whole."""
    length: int = 0

    @property
    def chars(self) -> int:
        return self.length if self.parts is not None else len(self.text)


class Unreadable(Exception):
    """The file is skipped; the message says why."""


def kind_of(path: Path) -> str | None:
    return KINDS.get(Path(path).suffix.lower())


def read_sections(path: Path, data: bytes, *, text_column: str = "text", id_column: str | None = None
                  ) -> list[Section]:
    kind = kind_of(path)
    if kind is None:
        raise Unreadable(f"unsupported file type {Path(path).suffix or '(no suffix)'!r} (supported: {SUPPORTED})")
    if kind == "pdf":
        sections = _pdf_sections(data)
    elif kind == "table":
        sections = _table_sections(Path(path), text_column, id_column)
    else:
        _refuse_binary(data)
        sections = [Section(_html_text(data) if kind == "html" else _decode(data))]
    return [s for s in sections if s.text.strip()]


def content_hash(data: bytes, path: Path, text_column: str, id_column: str | None) -> str:
    """What tells a file's content apart: SHA-256 of its bytes (plus the column options for a table)."""
    return finish_hash(hashlib.sha256(data), path, text_column, id_column)


def file_hash(path: Path, text_column: str, id_column: str | None) -> str:
    """`content_hash` of the file, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(READ_BYTES):
            digest.update(block)
    return finish_hash(digest, path, text_column, id_column)


def finish_hash(digest: Hasher, path: Path, text_column: str, id_column: str | None) -> str:
    if kind_of(path) == "table":  # other columns make other chunks from the same bytes
        digest.update(f"\0text_column={text_column}\0id_column={id_column}".encode())
    return digest.hexdigest()


def stream_text(path: Path, digest: Hasher) -> list[Section]:
    """A .txt/.md file as `read_sections` makes it, but streamed: one pass now reads the file a
    block at a time into `digest` (a hashlib object), checks that it is text and counts its
    characters; the section's `parts` read and decode it again when the chunker gets to it."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    chars, blank = 0, True
    with open(path, "rb") as fh:
        first = True
        while block := fh.read(READ_BYTES):
            digest.update(block)
            if first:
                _refuse_binary(block)
                first = False
            try:
                text = decoder.decode(block)
            except UnicodeDecodeError:
                return read_sections(path, Path(path).read_bytes())  # raises, naming the byte as before
            chars += len(text)
            blank = blank and not text.strip()
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return read_sections(path, Path(path).read_bytes())
    return [] if blank else [Section("", parts=lambda: _decoded_blocks(path), length=chars)]


def _decoded_blocks(path: Path) -> Iterator[str]:
    # Checked by `stream_text` already; a file changed since then gets U+FFFD for a bad byte
    # (its hash is the checked content's, so the next run indexes it again).
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    with open(path, "rb") as fh:
        while block := fh.read(READ_BYTES):
            yield decoder.decode(block)
    yield decoder.decode(b"", final=True)


def _refuse_binary(data: bytes) -> None:
    if b"\x00" in data[:1 << 16]:
        raise Unreadable("binary content (NUL bytes), not text")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None


def _html_text(data: bytes) -> str:
    try:
        from bs4 import BeautifulSoup
    except ImportError:
        raise UserError("indexing .html needs beautifulsoup4: pip install 'llmtune[index]'") from None

    soup = BeautifulSoup(data, "html.parser")  # the standard library's parser: no C dependency
    for tag in soup(DROPPED_TAGS):
        tag.decompose()
    for tag in soup(BLOCK_TAGS):  # a line break after each block; inline tags (<b>, <a>) join their text
        tag.insert_after("\n")
    lines = (" ".join(line.split()) for line in soup.get_text().splitlines())
    return "\n".join(line for line in lines if line)


def _pdf_sections(data: bytes) -> list[Section]:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise UserError("indexing .pdf needs pypdf: pip install 'llmtune[index]'") from None

    # pypdf logs every repair it attempts; the skip reason says what matters.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("encrypted PDF (needs a password)")
        pages = [page.extract_text() or "" for page in reader.pages]
    except Unreadable:
        raise
    except Exception as exc:  # pypdf raises many types for damaged files
        raise Unreadable(f"not a readable PDF ({type(exc).__name__}: {str(exc)[:120]})") from None
    return [Section(text, f"page={n}") for n, text in enumerate(pages, start=1)]


def _table_sections(path: Path, text_column: str, id_column: str | None) -> list[Section]:
    from llmtune.embed.inputs import read_chunks

    sections = []
    try:
        for chunk in read_chunks(path, text_column=text_column, id_column=id_column):
            label = id_column or "row"
            sections.extend(Section(text, f"{label}={row_id}") for row_id, text in zip(chunk.ids, chunk.texts))
    except UserError as exc:
        raise Unreadable(_without_path(str(exc), path)) from None
    return sections


def _without_path(message: str, path: Path) -> str:
    """"/a/b.jsonl:12: no column 'text'" -> "line 12: no column 'text'" (the report names the file)."""
    rest = message.removeprefix(str(path))
    if rest.startswith(":") and rest[1:].split(":", 1)[0].isdigit():
        line, _, tail = rest[1:].partition(":")
        return f"line {line}:{tail}"
    return rest.lstrip(": ") or message
