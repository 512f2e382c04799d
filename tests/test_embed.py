"""`llmtune embed`: vectors equal to a hand-computed pooling, every format round-trips with
ids in input order, streaming in chunks changes nothing, and mistakes exit 2 naming the
file and row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

TEXTS = ["a gorgeous , witty , seductive movie .", "bad", "", "the film is strictly routine .",
         "it 's a charming and often affecting journey , with a long tail of words to pad the batch out",
         "unflinchingly bleak and desperate", "ok", "not good , not bad"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    from llmtune.embed.loading import load_for_embedding

    return load_for_embedding("tiny-bert")


def _encoder(loaded, **kw):
    from llmtune.models.encoder import Encoder

    kw.setdefault("batch_size", 3)
    return Encoder(loaded.tokenizer, loaded.body, **kw)


def _hidden_alone(tok, body, text: str, max_length: int = 512) -> torch.Tensor:
    """Hidden states of one text run on its own: no padding, no batching."""
    ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
    with torch.no_grad():
        return body(input_ids=torch.tensor([ids])).last_hidden_state[0]


def test_mean_pooling_matches_hand_computed_minilm():
    from transformers import AutoModel, AutoTokenizer

    from llmtune.embed.loading import load_for_embedding
    from llmtune.models.builtin import minilm_path

    loaded = load_for_embedding("minilm")
    assert loaded.max_length == 256  # sentence-transformers' max_seq_length for this model
    enc = _encoder(loaded, max_length=12)
    got = enc.embed(TEXTS)

    tok = AutoTokenizer.from_pretrained(minilm_path())
    body = AutoModel.from_pretrained(minilm_path()).eval()
    expected = np.stack([_hidden_alone(tok, body, t, max_length=12).mean(dim=0).numpy() for t in TEXTS])
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)
    assert enc.truncated == 1  # only the long sentence exceeds 12 tokens


@pytest.mark.parametrize("pooling", ["mean", "cls", "last", "max"])
def test_pooling_variants(tiny, pooling):
    texts = [t for t in TEXTS if t]
    got = _encoder(tiny, pooling=pooling).embed(texts)
    reduce = {"mean": lambda h: h.mean(0), "cls": lambda h: h[0], "last": lambda h: h[-1],
              "max": lambda h: h.max(0).values}[pooling]
    expected = np.stack([reduce(_hidden_alone(tiny.tokenizer, tiny.body, t)).numpy() for t in texts])
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)


def test_normalize_gives_unit_norms(tiny):
    got = _encoder(tiny, normalize=True).embed(TEXTS)
    norms = np.linalg.norm(got, axis=1)
    nonempty = [i for i, t in enumerate(TEXTS) if t]
    np.testing.assert_allclose(norms[nonempty], 1.0, atol=1e-5)
    # The tiny tokenizer adds no special tokens: an empty text has nothing to embed.
    assert not got[TEXTS.index("")].any()


def test_a_token_budget_cuts_batches_of_long_rows_and_keeps_the_vectors(tiny):
    """`batch_tokens` caps rows x padded width per forward pass (a batch pads to its first,
    longest row); short rows still fill `batch_size`; every row comes back, as without it."""
    from llmtune.errors import UserError

    ids = [[5 + (i % 7)] * n for i, n in enumerate([40, 3, 40, 2, 25, 3, 2, 40, 3, 1, 2, 3])]
    seen = []
    budget = _encoder(tiny, batch_size=4, batch_tokens=64)
    got = budget.embed_ids(ids, on_batch=lambda idx: seen.append([len(ids[i]) for i in idx]))
    assert seen == [[40], [40], [40], [25, 3], [3, 3, 3, 2], [2, 2, 1]]
    assert sorted(i for batch in seen for i in batch) == sorted(len(x) for x in ids)
    np.testing.assert_allclose(got.numpy(), _encoder(tiny, batch_size=4).embed_ids(ids).numpy(), atol=2e-5, rtol=0)
    with pytest.raises(UserError):
        _encoder(tiny, batch_tokens=0)


def _write_inputs(tmp_path, texts, ids):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = {}
    files["jsonl"] = tmp_path / "in.jsonl"
    files["jsonl"].write_text("".join(json.dumps({"key": k, "text": t}) + "\n" for k, t in zip(ids, texts)))
    files["tsv"] = tmp_path / "in.tsv"
    files["tsv"].write_text("key\ttext\n" + "".join(f"{k}\t{t}\n" for k, t in zip(ids, texts)))
    files["csv"] = tmp_path / "in.csv"
    files["csv"].write_text("key,text\n" + "".join(f'{k},"{t}"\n' for k, t in zip(ids, texts)))
    files["parquet"] = tmp_path / "in.parquet"
    pq.write_table(pa.table({"key": ids, "text": texts}), files["parquet"], row_group_size=5)
    files["txt"] = tmp_path / "in.txt"
    files["txt"].write_text("".join(t + "\n" for t in texts))
    return files


def _read_output(path):
    import pyarrow.parquet as pq

    from llmtune.embed.writers import ids_sidecar

    if path.suffix == ".parquet":
        table = pq.read_table(path)
        assert str(table.schema.field("embedding").type) == "list<element: float>"
        return table.column("id").to_pylist(), np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    if path.suffix == ".npy":
        vectors = np.load(path, mmap_mode="r")  # a plain .npy: memory-maps like any other
        side = ids_sidecar(path)
        ids = [json.loads(line) for line in side.read_text().splitlines()] if side.exists() else None
        return ids, np.array(vectors)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r["id"] for r in rows], np.array([r["embedding"] for r in rows], dtype=np.float32)


@pytest.mark.parametrize("suffix", [".parquet", ".npy", ".jsonl"])
def test_output_formats_round_trip_in_input_order(tiny, tmp_path, suffix):
    from llmtune.embed.run import embed_file
    from llmtune.embed.writers import ids_sidecar

    texts = [t for t in TEXTS if t] * 3
    keys = [f"doc-{i:02d}" for i in range(len(texts))][::-1]  # not sorted: order must come from the input
    expected = _encoder(tiny).embed(texts)
    files = _write_inputs(tmp_path, texts, keys)

    out = tmp_path / f"with_ids{suffix}"
    summary = embed_file("tiny-bert", files["jsonl"], out, id_column="key", chunk_rows=4)
    assert summary["rows"] == len(texts) and summary["dim"] == expected.shape[1]
    ids, vectors = _read_output(out)
    assert ids == keys
    np.testing.assert_allclose(vectors, expected, atol=1e-6, rtol=0)

    out = tmp_path / f"row_index{suffix}"
    embed_file("tiny-bert", files["txt"], out, chunk_rows=5)
    ids, vectors = _read_output(out)
    if suffix == ".npy":
        assert ids is None and not ids_sidecar(out).exists()  # ids are the row index: no sidecar
    else:
        assert ids == list(range(len(texts)))
    np.testing.assert_allclose(vectors, expected, atol=1e-6, rtol=0)
    assert not list(tmp_path.glob(".*tmp*"))  # temporary files renamed or removed


def test_every_input_format_gives_the_same_vectors(tiny, tmp_path):
    from llmtune.embed.run import embed_file

    texts = [t for t in TEXTS if t]
    keys = list(range(100, 100 + len(texts)))
    files = _write_inputs(tmp_path, texts, keys)
    expected = _encoder(tiny).embed(texts)
    for kind, path in files.items():
        out = tmp_path / f"{kind}.jsonl"
        embed_file("tiny-bert", path, out, id_column=None if kind == "txt" else "key")
        ids, vectors = _read_output(out)
        if kind in ("jsonl", "parquet"):
            assert ids == keys, kind  # integer ids stay integers
        elif kind in ("csv", "tsv"):
            assert ids == [str(k) for k in keys], kind
        np.testing.assert_allclose(vectors, expected, atol=1e-6, rtol=0, err_msg=kind)


def test_streaming_in_chunks_matches_one_chunk(tmp_path):
    from conftest import DATA

    from llmtune.embed.run import embed_file

    source = DATA / "sst2_dev.tsv"
    lines = source.read_text().splitlines()[:61]
    path = tmp_path / "sixty.tsv"
    path.write_text("\n".join(lines) + "\n")
    one = tmp_path / "one.npy"
    many = tmp_path / "many.npy"
    embed_file("tiny-bert", path, one, text_column="sentence", chunk_rows=10_000, batch_size=8)
    summary = embed_file("tiny-bert", path, many, text_column="sentence", chunk_rows=7, batch_size=8)
    assert summary["rows"] == 60
    a, b = np.load(one), np.load(many)
    assert a.shape == (60, 64)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


def test_cli_embeds_with_json_summary(cli, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("good movie\nbad movie\n")
    out = tmp_path / "vectors.npy"
    res = cli("embed", "tiny-bert", src, "--out", out, "--pooling", "max", "--normalize", "--json")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert doc["rows"] == 2 and doc["pooling"] == "max" and doc["normalize"] is True
    np.testing.assert_allclose(np.linalg.norm(np.load(out), axis=1), 1.0, atol=1e-5)


def test_cli_errors_name_the_file_and_row(cli, tmp_path):
    missing = tmp_path / "nope.jsonl"
    res = cli("embed", "tiny-bert", missing, "--out", tmp_path / "o.parquet")
    assert res.code == 2 and str(missing) in res.err and "not found" in res.err
    assert "Traceback" not in res.err

    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("sentence,label\nfine,1\n")
    res = cli("embed", "tiny-bert", csv_file, "--out", tmp_path / "o.parquet")
    assert res.code == 2
    assert f"{csv_file}:1: no column 'text'" in res.err and "--text-column" in res.err and "sentence" in res.err

    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"text": "one"}\n{"text": "two"}\n{"body": "three"}\n')
    res = cli("embed", "tiny-bert", jsonl, "--out", tmp_path / "o.parquet")
    assert res.code == 2 and f"{jsonl}:3: no column 'text'" in res.err
    assert not (tmp_path / "o.parquet").exists()  # no partial output left behind

    jsonl.write_text('{"text": "one"}\n{"text": null}\n')
    res = cli("embed", "tiny-bert", jsonl, "--out", tmp_path / "o.parquet")
    assert res.code == 2 and f"{jsonl}:2: column 'text' is empty" in res.err

    res = cli("embed", "tiny-bert", csv_file, "--text-column", "sentence", "--out", tmp_path / "o.xlsx")
    assert res.code == 2 and "unknown output type '.xlsx'" in res.err

    res = cli("embed", "tiny-bert", csv_file, "--text-column", "sentence", "--pooling", "median")
    assert res.code == 2 and "median" in res.err


def test_run_directory_embeds_with_its_merged_adapter(cli, write_recipe, tmp_path, tiny):
    """A LoRA run embeds with base + adapter (merged), not with the base model."""
    from conftest import DATA

    from llmtune.runs.open import open_run

    recipe = write_recipe({
        "model": {"name": "tiny-bert", "pooling": "mean"},
        "data": {"task": "classification", "train": {"path": str(DATA / "sst2_train.tsv"), "limit": 16},
                 "columns": {"text": "sentence", "label": "label"}, "eval_fraction": 0.0, "max_length": 32},
        "method": {"name": "lora", "r": 4, "target_modules": ["query", "value"]},
        "train": {"max_steps": 3, "batch_size": 8, "lr": 0.05},
    })
    run = tmp_path / "run"
    assert cli("train", recipe, "-o", run, "--json").code == 0
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(t for t in TEXTS if t) + "\n")
    res = cli("embed", run, src, "--out", tmp_path / "run.npy", "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["max_length"] == 32  # the run's data.max_length
    got = np.load(tmp_path / "run.npy")

    model = open_run(run).trained_model()
    model.eval()
    texts = [t for t in TEXTS if t]
    with torch.no_grad():
        expected = np.stack([model.body(input_ids=torch.tensor([tiny.tokenizer(t)["input_ids"]]))
                             .last_hidden_state[0].mean(0).numpy() for t in texts])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    base = _encoder(tiny).embed(texts)
    assert np.abs(got - base).max() > 1e-4  # the adapter changed the vectors


def test_a_csv_line_csv_cannot_parse_is_exit_2_naming_the_line(cli, tmp_path):
    """A field over Python's csv limit (131,072 characters; usually a quote never closed)
    ended `llmtune embed` (and `llmtune index` of a CSV) in a traceback; training already
    refused it with exit 2 (tests/test_bad_data.py "field over csv limit")."""
    import csv

    src = tmp_path / "docs.csv"
    src.write_text("text\nfine\n\"" + "x" * 200_000 + "\n")
    before = csv.field_size_limit(131_072)  # a fresh process's limit, whatever ran before
    try:
        res = cli("embed", "tiny-bert", src, "--out", tmp_path / "o.npy")
    finally:
        csv.field_size_limit(before)
    assert res.code == 2, res.err
    assert f"{src}:3: cannot parse this line (field larger than field limit" in res.err
    assert "quote" in res.err and "Traceback" not in res.err
    assert "the quoted field that opens on line 3 never closes" in res.err
    assert not (tmp_path / "o.npy").exists()


def test_embed_of_a_csv_whose_quote_never_closes_is_exit_2_naming_its_line(cli, tmp_path):
    """csv read a quote opened on line 4 and never closed as one text holding lines 4-6,
    and `llmtune embed` wrote a vector for it; a quoted field over two lines still embeds."""
    src = tmp_path / "docs.csv"
    src.write_text('id,text\na,"one\ntwo"\nb,"never closed\nc,three\nd,four\n')
    res = cli("embed", "tiny-bert", src, "--id-column", "id", "--out", tmp_path / "o.npy")
    assert res.code == 2, res.err
    assert f"{src}:4: a quote opened on this line never closes (csv would read the rest of the file, " \
           f"lines 4-6," in res.err and "Traceback" not in res.err
    assert not (tmp_path / "o.npy").exists()
    src.write_text('id,text\na,"one\ntwo"\nb,three\n')
    res = cli("embed", "tiny-bert", src, "--id-column", "id", "--out", tmp_path / "o.npy")
    assert res.code == 0, res.err


def test_embed_refuses_an_out_that_is_the_input_or_a_folder(cli, tmp_path):
    """`--out INPUT` replaced the user's input file with its own embeddings (exit 0), and an
    --out naming an existing folder ended, after embedding everything, in IsADirectoryError."""
    src = tmp_path / "docs.jsonl"
    src.write_text('{"text": "a", "id": "x"}\n{"text": "b", "id": "y"}\n')
    before = src.read_bytes()
    res = cli("embed", "tiny-bert", src, "--out", src)
    assert res.code == 2, res.err
    assert f"--out {src}: writing {src} would replace the input file {src}" in res.err
    assert "embedding " not in res.err and "Traceback" not in res.err  # refused before the model loads
    sidecar_input = tmp_path / "v.ids.jsonl"
    sidecar_input.write_bytes(before)
    res = cli("embed", "tiny-bert", sidecar_input, "--id-column", "id", "--out", tmp_path / "v.npy")
    assert res.code == 2 and f"would replace the input file {sidecar_input}" in res.err
    assert src.read_bytes() == before and sidecar_input.read_bytes() == before

    folder = tmp_path / "vectors.parquet"
    folder.mkdir()
    res = cli("embed", "tiny-bert", src, "--out", folder)
    assert res.code == 2, res.err
    assert f"--out {folder}: is a folder; name a file to write" in res.err and "Traceback" not in res.err
    assert not any(folder.iterdir()) and not list(tmp_path.glob(".*tmp*"))
