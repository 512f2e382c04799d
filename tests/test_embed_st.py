"""`llmtune embed` on a sentence-transformers folder gives, by default, what that model's own
pipeline gives (issue 9): MiniLM's modules.json says mean pooling then Normalize, so the
default output equals SentenceTransformer(folder).encode(texts); flags override it."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["a gorgeous , witty , seductive movie .", "bad", "the film is strictly routine .",
         "it 's a charming and often affecting journey , with a long tail of words to pad the batch out",
         "unflinchingly bleak and desperate", "ok", "not good , not bad"]


@pytest.fixture(scope="module")
def st_vectors():
    from sentence_transformers import SentenceTransformer

    from llmtune.models.builtin import minilm_path

    return SentenceTransformer(str(minilm_path()), device="cpu").encode(TEXTS, convert_to_numpy=True)


def _embed(cli, tmp_path, *flags):
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / f"out{len(flags)}{''.join(flags)}.npy"
    res = cli("embed", "minilm", src, "--out", out, "--batch-size", "3", "--json", *flags)
    assert res.code == 0, res.err
    return np.load(out), json.loads(res.out)


def test_default_equals_sentence_transformers_encode(cli, tmp_path, st_vectors):
    got, summary = _embed(cli, tmp_path)
    assert summary["pooling"] == "mean" and summary["normalize"] is True and summary["max_length"] == 256
    np.testing.assert_allclose(got, st_vectors, atol=1e-6, rtol=0)


def test_flags_override_the_pipeline(cli, tmp_path, st_vectors):
    raw, summary = _embed(cli, tmp_path, "--no-normalize")
    assert summary["normalize"] is False
    norms = np.linalg.norm(raw, axis=1)
    assert (np.abs(norms - 1) > 1e-2).all()  # really not normalised
    np.testing.assert_allclose(raw / norms[:, None], st_vectors, atol=1e-6, rtol=0)
    cls, summary = _embed(cli, tmp_path, "--pooling", "cls")
    assert summary["pooling"] == "cls" and summary["normalize"] is True
    assert np.abs(cls - st_vectors).max() > 1e-2


def test_pipeline_reader(tmp_path):
    from llmtune.embed.st_pipeline import read_pipeline

    assert read_pipeline(tmp_path) is None  # not a sentence-transformers folder
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (tmp_path / "modules.json").write_text(json.dumps([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    pipeline = read_pipeline(tmp_path)
    assert pipeline.pooling == "cls" and pipeline.normalize is False
    assert pipeline.unsupported == ["2_Dense (Dense)"]
