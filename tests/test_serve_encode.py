"""`llmtune serve` on encoders, driven by the official `openai` client against a real server
process on loopback: a classification run (classify + embeddings, behind an API key) and a
base encoder (embeddings). What the server answers is checked against what `llmtune embed`
writes and what `llmtune eval` scores, not against fixed numbers."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from serve_helpers import ServerProcess
from conftest import RECIPES

pytestmark = pytest.mark.usefixtures("one_thread")

KEY = "test-key-123"
DEV_ROWS = 40


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    """A tiny-bert LoRA classification run (a few steps: enough to move off its random start)."""
    import torch

    from llmtune.console import Reporter
    from llmtune.recipe.load import recipe_from_dict
    from llmtune.train.session import run_recipe

    root = tmp_path_factory.mktemp("serve-cls")
    raw = {"model": {"name": "tiny-bert"},
           "data": {"task": "classification", "train": {"path": str(RECIPES / "data/sst2_train.tsv"), "limit": 48},
                    "eval": {"path": str(RECIPES / "data/sst2_dev.tsv"), "limit": DEV_ROWS},
                    "columns": {"text": "sentence", "label": "label"}, "max_length": 24},
           "method": {"name": "lora", "r": 4, "target_modules": ["query", "value"]},
           "train": {"max_steps": 6, "batch_size": 8, "lr": 2e-2, "log_every": 3}}
    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng():
        mp.setenv("LLMTUNE_CACHE", str(root / "cache"))
        run_recipe(recipe_from_dict(raw), Reporter(quiet=True), output=root / "run")
    return root / "run"


@pytest.fixture(scope="module")
def cls_server(cls_run):
    server = ServerProcess(str(cls_run), "--api-key", KEY, "--name", "sst2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(cls_server):
    from openai import OpenAI

    return OpenAI(base_url=cls_server.base_url, api_key=KEY, max_retries=0, timeout=60)


def _dev_sentences() -> tuple[list[str], list[str]]:
    lines = (RECIPES / "data/sst2_dev.tsv").read_text().splitlines()[1:DEV_ROWS + 1]
    rows = [line.split("\t") for line in lines]
    return [r[0] for r in rows], [r[1].strip() for r in rows]


def test_models_lists_the_run_with_what_it_serves(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["sst2"]
    extra = models[0].model_extra
    assert extra["task"] == "classification" and extra["labels"] == ["0", "1"]
    assert set(extra["endpoints"]) == {"/v1/classify", "/v1/embeddings"}


def test_classify_scores_as_eval_does(client, cls_run):
    """The served labels over the dev rows give exactly the accuracy `llmtune eval` reports."""
    from llmtune.console import Reporter
    from llmtune.runs.evaluate import evaluate_target

    texts, golds = _dev_sentences()
    answer = client.post("/classify", body={"model": "sst2", "input": texts}, cast_to=object)
    rows = answer["data"]
    assert [r["index"] for r in rows] == list(range(len(texts)))
    for r in rows:
        assert set(r["probabilities"]) == {"0", "1"}
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["label"] == max(r["probabilities"], key=r["probabilities"].get)
    served_accuracy = np.mean([r["label"] == g for r, g in zip(rows, golds)])
    metrics = evaluate_target(cls_run, [], None, Reporter(quiet=True))
    assert metrics["examples"] == len(texts)
    assert served_accuracy == pytest.approx(metrics["accuracy"])
    assert answer["usage"]["prompt_tokens"] > len(texts)


def test_embeddings_equal_what_llmtune_embed_writes(client, cls_run, tmp_path):
    from llmtune.embed.run import embed_file

    texts = ["a gorgeous , witty , seductive movie .", "bad", "unflinchingly bleak and desperate"]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n")
    embed_file(str(cls_run), src, tmp_path / "vectors.npy")
    expected = np.load(tmp_path / "vectors.npy")
    by_default = client.embeddings.create(model="sst2", input=texts)  # the client asks for base64
    as_floats = client.embeddings.create(model="sst2", input=texts, encoding_format="float")
    for answer in (by_default, as_floats):
        got = np.array([d.embedding for d in answer.data], dtype=np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert by_default.usage.prompt_tokens == by_default.usage.total_tokens > 0


def test_bad_requests_get_400_naming_the_field(client):
    import openai

    cases = [({"input": []}, "input"), ({"input": "x", "dimensions": 3}, "dimensions"),
             ({"input": "x", "extra_body": {"colour": "red"}}, "colour"),
             ({"input": [[1, 2, 3]]}, "input")]
    for kwargs, field in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="sst2", **kwargs)
        err = caught.value.body
        assert caught.value.status_code == 400 and err["param"] == field, err
        assert err["message"].startswith(f"{field}:"), err
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/classify", body={"model": "sst2", "input": "x", "text_pair": "y"}, cast_to=object)
    assert caught.value.body["param"] == "text_pair"
    # Malformed JSON: 400, not a crash and not FastAPI's 422.
    raw = httpx.post(f"{client.base_url}embeddings", content=b"{nope", headers={"Authorization": f"Bearer {KEY}",
                                                                                 "Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "body"


def test_unknown_model_is_404_and_wrong_endpoint_400(client):
    import openai

    with pytest.raises(openai.NotFoundError) as caught:
        client.embeddings.create(model="gpt-4o", input="x")
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="sst2", messages=[{"role": "user", "content": "hi"}])
    assert "/v1/classify" in caught.value.body["message"]


def test_every_route_needs_the_key(cls_server):
    import openai
    from openai import OpenAI

    wrong = OpenAI(base_url=cls_server.base_url, api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert caught.value.body["code"] == "invalid_api_key"
    for path in ("/health", "/v1/models", "/v1/embeddings", "/nowhere"):
        response = httpx.post(f"http://127.0.0.1:{cls_server.port}{path}", json={})
        assert response.status_code == 401, path
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_concurrent_requests_all_answered(client, cls_server):
    """Sixteen clients at once, embeddings and classify mixed: every answer right, no error."""
    from concurrent.futures import ThreadPoolExecutor

    texts, _ = _dev_sentences()
    alone = client.post("/classify", body={"model": "sst2", "input": texts[:16]}, cast_to=object)["data"]

    def one(i: int):
        if i % 2:
            return client.post("/classify", body={"model": "sst2", "input": texts[i]}, cast_to=object)["data"][0]
        return client.embeddings.create(model="sst2", input=texts[i], encoding_format="float").data[0]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    for i, answer in enumerate(answers):
        if i % 2:
            assert answer["label"] == alone[i]["label"]
            assert answer["probabilities"]["1"] == pytest.approx(alone[i]["probabilities"]["1"], abs=1e-5)
        else:
            assert len(answer.embedding) == 64
    assert cls_server.proc.poll() is None


def test_base_encoder_embeds_as_llmtune_embed(tmp_path):
    from openai import OpenAI

    from llmtune.embed.run import embed_file

    texts = ["the film is strictly routine .", "ok", "not good , not bad"]
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n")
    embed_file("tiny-bert", src, tmp_path / "vectors.npy")
    server = ServerProcess("tiny-bert")
    try:
        client = OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)
        got = client.embeddings.create(model="tiny-bert", input=texts)
        np.testing.assert_allclose(np.array([d.embedding for d in got.data]), np.load(tmp_path / "vectors.npy"),
                                   atol=1e-5, rtol=0)
        assert client.models.list().data[0].model_extra["task"] == "embedding"
        assert server.terminate() == 0
    finally:
        server.stop()
    assert "SIGTERM: drained and stopped" in server.log()


def test_open_address_without_a_key_exits_2(cli, monkeypatch):
    monkeypatch.delenv("LLMTUNE_API_KEY", raising=False)
    result = cli("serve", "tiny-bert", "--host", "0.0.0.0", "--port", "0")
    assert result.code == 2 and "needs an API key" in result.err and "LLMTUNE_API_KEY" in result.err
    monkeypatch.setenv("LLMTUNE_API_KEY", "  ")
    result = cli("serve", "tiny-bert", "--port", "0")
    assert result.code == 2 and "empty" in result.err
