"""`llmtune serve` on a causal LM (tiny-llama), driven by the official `openai` client against
real server processes on loopback: chat and completions, whole and streamed, give exactly what
the generation core gives in-process; sampling options; 400s naming the field; requests
arriving together batch without changing answers; a full queue answers 503; a client that
disconnects stops its generation; SIGTERM lets a stream in flight finish, then exits 0."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serve_helpers import ServerProcess

pytestmark = pytest.mark.usefixtures("one_thread")

LONG = 480
"""New tokens for a request that must still be running while the test acts: greedy on the
seeded tiny-llama never meets end-of-sequence within this many for these prompts (~2 s)."""
PROMPTS = ["hello", "tell me a story", "once upon a time", "write a long poem about the sea", "a b c d e f g",
           "what is two and two", "the sea", "x"]


@pytest.fixture(scope="module")
def servers():
    """Two servers started side by side: `main` (batches up to 4) and `small` (one request
    running, one waiting: the queue tests), both serving tiny-llama."""
    with ThreadPoolExecutor(2) as pool:
        main = pool.submit(ServerProcess, "tiny-llama", "--max-batch", "4")
        small = pool.submit(ServerProcess, "tiny-llama", "--max-queue", "1", "--max-batch", "1", "--name", "small")
        started = {"main": main.result(), "small": small.result()}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def client(servers):
    from openai import OpenAI

    return OpenAI(base_url=servers["main"].base_url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def core():
    """The generation core in this process, on the same model: what the server must reproduce."""
    from llmtune.generation.params import Request, SamplingParams
    from llmtune.runs.inference import open_causal_lm

    model = open_causal_lm("tiny-llama", verb="serve")

    def greedy(content: str, max_tokens: int, chat: bool = True):
        from llmtune.generation.prompts import TEXT, PromptFormat

        message = [{"role": "user", "content": content}]
        ids = model.prompt_ids(message) if chat else PromptFormat(TEXT).render(model.tokenizer, message)
        return model.engine.complete([Request(ids, SamplingParams(max_new_tokens=max_tokens))])[0]

    return greedy


def _chat(client, content: str, **kw):
    return client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": content}], **kw)


def test_chat_and_completions_give_what_the_core_gives(client, core):
    assert [m.id for m in client.models.list().data] == ["tiny-llama"]
    for prompt in PROMPTS[:3]:
        expected = core(prompt, 12)
        answer = _chat(client, prompt, max_tokens=12)
        assert answer.choices[0].message.content == expected.text and answer.choices[0].finish_reason == "length"
        assert answer.usage.prompt_tokens == expected.prompt_tokens and answer.usage.completion_tokens == 12
        raw = core(prompt, 12, chat=False)
        completion = client.completions.create(model="tiny-llama", prompt=prompt, max_tokens=12)
        assert completion.choices[0].text == raw.text and completion.usage.prompt_tokens == raw.prompt_tokens


def test_streams_add_up_to_the_whole_answer(client):
    whole = _chat(client, "once upon a time", max_tokens=20).choices[0].message.content
    chunks = list(_chat(client, "once upon a time", max_tokens=20, stream=True,
                        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 20 and not chunks[-1].choices
    whole = client.completions.create(model="tiny-llama", prompt="the sea", max_tokens=15).choices[0].text
    pieces = list(client.completions.create(model="tiny-llama", prompt="the sea", max_tokens=15, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == whole


def test_stop_seed_and_sampling(client):
    text = _chat(client, "tell me a story", max_tokens=30).choices[0].message.content
    stop = text[len(text) // 2:len(text) // 2 + 3]
    cut = _chat(client, "tell me a story", max_tokens=30, stop=[stop])
    assert cut.choices[0].message.content == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"
    sampled = [_chat(client, "hello", max_tokens=16, temperature=1.0, top_p=0.9, seed=seed).choices[0].message.content
               for seed in (7, 7, 8)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]


def test_bad_requests_get_400_naming_the_field(client):
    import openai

    cases = [(dict(temperature=3.0), "temperature"), (dict(n=2), "n"), (dict(max_tokens=0), "max_tokens"),
             (dict(stop=["a", "b", "c", "d", "e"]), "stop"), (dict(logprobs=True), "logprobs"),
             (dict(extra_body={"frobnicate": 1}), "frobnicate")]
    for kwargs, field in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            _chat(client, "hi", **kwargs)
        assert caught.value.body["param"] == field, caught.value.body
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "robot", "content": "hi"}])
    assert caught.value.body["param"] == "messages.0.role"
    for stream in (False, True):  # a streamed request is refused with a status too, before any event
        with pytest.raises(openai.BadRequestError) as caught:
            _chat(client, "word " * 600, stream=stream)
        assert caught.value.body["code"] == "context_length_exceeded" and caught.value.body["param"] == "messages"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hi")
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="tiny-llama", input="hi")
    assert "/v1/chat/completions" in caught.value.body["message"]


def test_requests_arriving_together_batch_without_changing_answers(client, servers):
    alone = {p: _chat(client, p, max_tokens=24).choices[0].message.content for p in PROMPTS}
    health = httpx.get(f"http://127.0.0.1:{servers['main'].port}/health").json()
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(lambda p: _chat(client, p, max_tokens=24).choices[0].message.content, PROMPTS))
    assert together == [alone[p] for p in PROMPTS]
    after = httpx.get(f"http://127.0.0.1:{servers['main'].port}/health").json()
    answered, batches = after["answered"] - health["answered"], after["batches"] - health["batches"]
    assert answered == len(PROMPTS) and batches < answered  # some of them shared a batch


def test_a_disconnecting_client_stops_its_generation(servers):
    server = servers["main"]
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hello"}], "max_tokens": LONG,
            "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=60) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: ")
            if seen == 3:
                break  # leaving the block closes the connection mid-stream
    line = server.wait_for_line(r"went away; generation stopped after \d+ tokens")
    stopped_after = int(re.search(r"after (\d+) tokens", line).group(1))
    assert 2 <= stopped_after < LONG
    # A client waiting for a whole (unstreamed) answer that gives up is noticed too.
    body = {**body, "stream": False, "messages": [{"role": "user", "content": "the sea"}]}
    before = server.log().count("went away")
    # It gives up after 0.15 s: tiny-llama writes all 480 tokens in under 0.5 s on a quiet machine.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=0.15)
    deadline = time.monotonic() + 30
    while server.log().count("went away") == before:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert int(re.findall(r"after (\d+) tokens", server.log())[-1]) < LONG


def _stream_all(server, name: str, max_tokens: int, first: threading.Event, out: dict) -> None:
    body = {"model": name, "messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    events = []
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                first.set()
    out["events"] = events


def test_a_full_queue_answers_503(servers):
    import openai
    from openai import OpenAI

    server = servers["small"]
    client = OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)
    first, out = threading.Event(), {}
    running = threading.Thread(target=_stream_all, args=(server, "small", LONG, first, out))
    running.start()
    assert first.wait(30)  # the worker is decoding the long request
    waiting = threading.Thread(target=lambda: out.setdefault("waiting", _chat_small(client)))
    waiting.start()
    deadline = time.monotonic() + 10
    while httpx.get(f"http://127.0.0.1:{server.port}/health").json()["waiting"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(openai.InternalServerError) as caught:
        _chat_small(client)
    assert caught.value.status_code == 503 and caught.value.body["code"] == "queue_full"
    running.join(60)
    waiting.join(60)
    assert out["events"][-1] == "[DONE]" and out["waiting"].choices[0].finish_reason == "length"


def _chat_small(client):
    return client.chat.completions.create(model="small", messages=[{"role": "user", "content": "hi"}], max_tokens=4)


def test_sigterm_lets_the_stream_in_flight_finish_then_exits_0(servers):
    server = servers["small"]
    first, out = threading.Event(), {}
    streaming = threading.Thread(target=_stream_all, args=(server, "small", LONG, first, out))
    streaming.start()
    assert first.wait(30)
    server.proc.send_signal(15)
    streaming.join(60)
    assert server.proc.wait(60) == 0
    events = out["events"]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["usage"]["completion_tokens"] == LONG  # nothing was cut short
    assert "SIGTERM: drained and stopped" in server.log()
    with pytest.raises(httpx.ConnectError):  # and nothing new is accepted
        httpx.get(f"http://127.0.0.1:{server.port}/health")
