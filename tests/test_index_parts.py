"""The index's pure parts: chunk boundaries and overlap, parsing per format, and the IR metrics
on a hand-checked case. No Milvus, no model weights."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtune.errors import UserError
from llmtune.data.chunking import Chunker
from llmtune.index.formats import Unreadable, read_sections
from llmtune.evaluate.ir_metrics import evaluate_run, ndcg_at_k, recall_at_k, reciprocal_rank

TEXT = ("Milvus stores vectors. " * 3 + "Boundary-layer transition is long-studied. "
        + "The quick brown fox jumps over the lazy dog while the naïve café owner watches. " * 6)


@pytest.fixture(scope="module")
def minilm_tok():
    from llmtune.models.load import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture(scope="module")
def bytelevel_tok():
    from llmtune.models.load import load_tokenizer

    return load_tokenizer("tiny-llama")  # byte-level BPE: some characters are several tokens


def _check_pieces(tok, text, pieces, size, overlap):
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    previous = None  # (first token, one past the last) of the previous piece
    for p in pieces:
        lo = 0 if previous is None else previous[0] + 1
        first = next(t for t in range(lo, len(ids)) if offsets[t][0] == p.start and ids[t:t + len(p.ids)] == p.ids)
        last = first + len(p.ids)
        assert 1 <= len(p.ids) <= size
        assert p.end == offsets[last - 1][1], "exact offsets"
        if previous is None:
            assert first == 0, "the first window starts at the first token"
        else:
            assert first <= previous[1], "no token left out between windows"
            assert previous[1] - first <= overlap, "overlap at most K tokens"
            assert offsets[first][0] >= offsets[first - 1][1], "never a cut inside a character"
        previous = (first, last)
    assert previous is None or previous[1] == len(ids), "the last window reaches the end"


def test_windows_cover_the_text_with_bounded_overlap_and_exact_offsets(minilm_tok):
    pieces = Chunker(minilm_tok, 16, 4).split(TEXT)
    assert len(pieces) > 5
    _check_pieces(minilm_tok, TEXT, pieces, 16, 4)
    for p in pieces:
        chunk = TEXT[p.start:p.end]
        # Boundaries at word starts: the chunk text tokenizes back to exactly its ids.
        assert minilm_tok(chunk, add_special_tokens=False)["input_ids"] == p.ids
        assert not chunk[0].isspace() and not chunk[-1].isspace()
    # Consecutive windows do share tokens (the overlap is used, not just allowed).
    assert any(a.end > b.start for a, b in zip(pieces, pieces[1:]))


def test_a_word_longer_than_the_window_is_cut_between_tokens_only(minilm_tok, bytelevel_tok):
    # The byte-level tokenizer spends several tokens on each of these characters.
    for tok, word in ((minilm_tok, "Pneumonoultramicroscopicsilicovolcanoconiosis" * 2), (bytelevel_tok, "ïé" * 40)):
        text = f"start {word} end"
        pieces = Chunker(tok, 8, 2).split(text)
        assert len(pieces) > 3
        _check_pieces(tok, text, pieces, 8, 2)


@settings(max_examples=40, deadline=None)
@given(words=st.lists(st.sampled_from(["a", "bb", "naïve", "x-y", "42.5", "\n\n", "  ", "Zorblax", "é"]),
                      max_size=80), size=st.integers(2, 12), overlap_frac=st.floats(0, 0.9))
def test_chunking_invariants_hold_for_any_text(bytelevel_tok, words, size, overlap_frac):
    text = " ".join(words)
    overlap = min(size - 1, int(size * overlap_frac))
    pieces = Chunker(bytelevel_tok, size, overlap).split(text)
    if not bytelevel_tok(text, add_special_tokens=False)["input_ids"]:
        assert pieces == []
    else:
        _check_pieces(bytelevel_tok, text, pieces, size, overlap)


def test_bad_chunk_settings_are_user_errors(minilm_tok):
    with pytest.raises(UserError, match="--overlap 8: must be at least 0 and below --chunk-tokens"):
        Chunker(minilm_tok, 8, 8)


def test_html_keeps_visible_text_only():
    html = (b"<html><head><title>Title</title><style>p {color: red}</style></head><body><h1>Heading</h1>"
            b"<p>Volcanoes <b>erupt</b> lava.</p><script>var secret = 1;</script><ul><li>one</li><li>two</li></ul>"
            b"</body></html>")
    [section] = read_sections("page.html", html)
    assert section.text == "Heading\nVolcanoes erupt lava.\none\ntwo"


def _pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF, one text line per page (what a PDF writer would emit)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objs)} 0 R "
                    f"/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objs)} 0 R")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    out, offsets = b"%PDF-1.4\n", []
    for n, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_pdf_pages_are_sections_and_a_corrupt_pdf_is_unreadable():
    sections = read_sections("doc.pdf", _pdf(["Lift and drag of wings.", "Boundary layers."]))
    assert [(s.text.strip(), s.locator) for s in sections] == [("Lift and drag of wings.", "page=1"),
                                                               ("Boundary layers.", "page=2")]
    with pytest.raises(Unreadable, match="not a readable PDF"):
        read_sections("bad.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R")


def test_binary_text_files_and_unknown_suffixes_are_unreadable():
    with pytest.raises(Unreadable, match="binary content"):
        read_sections("x.txt", b"abc\x00\x01\x02")
    with pytest.raises(Unreadable, match="not UTF-8 text"):
        read_sections("x.md", b"caf\xe9")
    with pytest.raises(Unreadable, match="unsupported file type '.png'"):
        read_sections("x.png", b"\x89PNG")


def test_table_rows_are_sections_with_their_ids(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"body": "first", "key": "a"}\n\n{"body": "second", "key": "b"}\n')
    sections = read_sections(path, path.read_bytes(), text_column="body", id_column="key")
    assert [(s.text, s.locator) for s in sections] == [("first", "key=a"), ("second", "key=b")]
    with pytest.raises(Unreadable, match=r"line 1: no column 'text'"):
        read_sections(path, path.read_bytes())


def test_a_csv_whose_quote_never_closes_is_unreadable_naming_the_line(tmp_path):
    """csv read the quote and every line after it as one row's text, so the file was indexed
    with that text as a chunk; multi-line quoted fields of a good file still index."""
    path = tmp_path / "rows.csv"
    path.write_text('text\n"first\nspans two lines"\nsecond\n"third never closes\nfourth\n')
    with pytest.raises(Unreadable, match=r"^line 5: a quote opened on this line never closes .*lines 5-6,"):
        read_sections(path, path.read_bytes())
    path.write_text('text\n"first\nspans two lines"\nsecond\n')
    assert [s.text for s in read_sections(path, path.read_bytes())] == ["first\nspans two lines", "second"]


def test_ir_metrics_on_a_hand_checked_case():
    qrels = {"d1": 3, "d2": 2, "d3": 1, "d9": 0}
    ranked = ["d2", "x", "d1", "d9"]
    # DCG = 2/log2(2) + 0 + 3/log2(4) = 2 + 1.5; ideal = 3 + 2/log2(3) + 1/log2(4) = 3 + 1.26186 + 0.5.
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(3.5 / (3 + 2 / math.log2(3) + 0.5))
    assert 3 + 2 / math.log2(3) + 0.5 == pytest.approx(4.7618595)
    assert ndcg_at_k(ranked, qrels, 1) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, qrels, 3) == pytest.approx(2 / 3)
    assert reciprocal_rank(ranked, qrels) == 1.0 and reciprocal_rank(["x", "y", "d3"], qrels) == pytest.approx(1 / 3)
    run = {"q1": ranked, "q2": ["a"], "q3": ["b"]}
    out = evaluate_run(run, {"q1": qrels, "q2": {"a": 1}, "q3": {"z": 0}})
    assert out["queries"] == 2  # q3 has no relevant document: not averaged
    assert out["mrr"] == pytest.approx(1.0) and out["recall@100"] == pytest.approx((2 / 3 + 1) / 2)


def test_the_summary_counts_skips_by_kind_not_by_line():
    from llmtune.index.sync import Tally

    tally = Tally()
    tally.skipped += [("a.csv", "line 3: cannot parse this line (field larger than field limit); fix the quoting"),
                      ("b.csv", "line 9: cannot parse this line (x)"),
                      ("c.bin", "unsupported file type '.bin'")]
    assert tally.line().endswith("3 skipped (2 cannot parse this line, 1 unsupported file type '.bin')")


def test_a_folder_that_is_not_a_store_is_refused_and_left_alone(tmp_path, cli):
    from llmtune.index.store import parse_location

    folder = tmp_path / "notes.db"
    folder.mkdir()
    (folder / "mine.txt").write_text("my own file")
    for args in (("query", "--store", folder, "x"), ("index", tmp_path / "notes.db" / "mine.txt", "--store", folder),
                 ("ask", "--store", folder, "x", "--model", "tiny-llama")):
        res = cli(*args)
        assert res.code == 2 and "exists but is not a Milvus Lite store" in res.err, (args, res.err)
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]
    empty = tmp_path / "empty.db"
    empty.mkdir()
    assert parse_location(str(empty), create=True).local == empty.resolve()  # index may start a store there
    with pytest.raises(UserError, match="is not a Milvus Lite store"):
        parse_location(str(empty))  # query and ask never create one
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("which", ["minilm_tok", "bytelevel_tok"])
def test_a_long_text_is_cut_a_block_at_a_time_into_the_same_pieces(which, request):
    """`iter_split` tokenizes a block at a time (bounded memory for a 20 MB file) and must cut
    exactly where `split` over the whole text does."""
    import random

    tok = request.getfixturevalue(which)
    rng = random.Random(5)
    words = ["wing", "flow", "naïve", "–", "shock", "boundary", "layer", "日本", "x=1.5,", "(drag)"]
    text = "".join(rng.choice(words) + rng.choice([" ", " ", "  ", "\n", "\n\n", "\t"]) for _ in range(3000))
    whole = [(p.start, p.end, p.ids) for p in Chunker(tok, 32, 8).split(text)]
    for block in (300, 1000, 4096):
        assert [(p.start, p.end, p.ids) for p in Chunker(tok, 32, 8).iter_split(text, block)] == whole, block


@pytest.mark.parametrize("which", ["minilm_tok", "bytelevel_tok"])
def test_a_text_read_in_parts_is_cut_into_the_same_pieces_as_the_whole_text(which, request):
    """`iter_split_stream` gets the text in parts of any sizes (a file decoded as it is read), so
    windows and their overlaps straddle both the parts and the tokenizer's blocks; the pieces
    must be those of `split` over the whole text, each carrying its own text."""
    import random

    tok = request.getfixturevalue(which)
    rng = random.Random(11)
    words = ["wing", "flow", "naïve", "–", "shock", "boundary", "layer", "日本", "x=1.5,", "(drag)", "a" * 90]
    text = "".join(rng.choice(words) + rng.choice([" ", " ", "  ", "\n", "\n\n", "\t"]) for _ in range(2500))
    whole = [(p.start, p.end, p.ids) for p in Chunker(tok, 32, 8).split(text)]
    assert sum(b[0] < a[1] for a, b in zip(whole, whole[1:])) > len(whole) // 2, "windows overlap"
    for block, most in ((300, 7), (1000, 333), (4096, 5000)):
        parts, at = [], 0
        while at < len(text):
            size = rng.randint(1, most)
            parts.append(text[at:at + size])
            at += size
        pieces = list(Chunker(tok, 32, 8).iter_split_stream(iter(parts), block))
        assert [(p.start, p.end, p.ids) for p in pieces] == whole, block
        assert all(p.text == text[p.start:p.end] for p in pieces)
    assert list(Chunker(tok, 32, 8).iter_split_stream(["", ""], 300)) == []


def test_a_plain_text_file_is_streamed_into_the_sections_it_reads_as_whole(tmp_path, monkeypatch, minilm_tok):
    """A .txt file is read a block of bytes at a time (multi-byte characters and the byte-order
    mark cut across blocks): the same hash, text length and pieces as reading it whole, and the
    same refusals."""
    import hashlib

    from llmtune.index import formats

    monkeypatch.setattr(formats, "READ_BYTES", 7)
    text = "naïve café – 日本 flow\n\n" * 40 + "boundary layer"
    path = tmp_path / "doc.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    digest = hashlib.sha256()
    [section] = formats.stream_text(path, digest)
    [whole] = read_sections(path, path.read_bytes())
    assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (section.chars, "".join(section.parts())) == (len(whole.text), whole.text)
    chunker = Chunker(minilm_tok, 16, 4)
    streamed = [(p.start, p.end, p.ids, p.text) for p in chunker.iter_split_stream(section.parts(), 50)]
    assert streamed == [(p.start, p.end, p.ids, whole.text[p.start:p.end]) for p in chunker.split(whole.text)]
    for name, data in (("bad.md", "café".encode() * 5 + b"caf\xe9"), ("nul.txt", b"abc\x00\x01")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(Unreadable) as streamed_error:
            formats.stream_text(tmp_path / name, hashlib.sha256())
        with pytest.raises(Unreadable) as whole_error:
            read_sections(tmp_path / name, data)
        assert str(streamed_error.value) == str(whole_error.value)
    (tmp_path / "blank.txt").write_text(" \n\t\n")
    assert formats.stream_text(tmp_path / "blank.txt", hashlib.sha256()) == []
