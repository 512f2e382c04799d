"""The generation core (llmtune.generation): batched left-padded greedy decoding gives what
transformers' generate() gives one prompt at a time; deltas add up to the answer and never
show a stop string; sampling is seeded per request; cancel flags stop between tokens; the
context bounds prompts and answers; prefix and soft-prompt models generate through the KV
cache as they compute without one."""

from __future__ import annotations

import threading

import pytest
import torch
from tiny_lm import tiny_causal_lm

from llmtune.generation.engine import Engine
from llmtune.generation.params import CANCELLED, LENGTH, STOP, BadParameter, PromptTooLong, Request, SamplingParams
from llmtune.generation.prompts import CHAT, PLAIN, TEXT, PromptFormat
from llmtune.generation.text import TextStream

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["hello world", "the quick brown fox jumps over the lazy dog", "a",
         "### Instruction:\nName a colour.\n\n### Response:\n"]


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2"])
def lm(request):
    model, tok = tiny_causal_lm(request.param)
    return model.body.eval(), tok


def _hf_greedy(body, ids: list[int], n: int, eos: int) -> list[int]:
    out = body.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                        max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=eos)[0, len(ids):].tolist()
    return out[:-1] if out and out[-1] == eos else out


def test_batched_greedy_equals_transformers_one_prompt_at_a_time(lm):
    body, tok = lm
    prompts = [tok(t)["input_ids"] for t in TEXTS]
    engine = Engine(body, tok, stop_token_ids=[tok.eos_token_id])
    # different limits in one batch: rows leave the batch (and the cache) as they finish
    limits = [24, 5, 17, 24]
    done = engine.complete([Request(p, SamplingParams(max_new_tokens=n)) for p, n in zip(prompts, limits)],
                           batch_size=4)
    for p, n, c in zip(prompts, limits, done):
        assert c.token_ids == _hf_greedy(body, p, n, tok.eos_token_id)
        assert c.prompt_tokens == len(p) and c.finish_reason in (STOP, LENGTH)
    assert [c.finish_reason for c in done].count(LENGTH) >= 1


def test_deltas_add_up_and_never_show_a_stop_string(lm):
    body, tok = lm
    engine = Engine(body, tok)
    prompt = tok(TEXTS[1])["input_ids"]
    free = engine.complete([Request(prompt, SamplingParams(max_new_tokens=40))])[0].text
    assert len(free) > 6
    stop = free[3:6]  # a stop string the free answer runs into
    deltas = list(engine.stream(Request(prompt, SamplingParams(max_new_tokens=40, stop=(stop, "never there")))))
    streamed = "".join(d.text for d in deltas)
    assert streamed == free[:free.index(stop)]
    assert deltas[-1].finish_reason == STOP and all(d.finish_reason is None for d in deltas[:-1])
    assert not any(stop in "".join(d.text for d in deltas[:i]) for i in range(len(deltas) + 1))


def test_text_stream_holds_back_half_characters():
    from llmtune.models.load import load_tokenizer

    tok = load_tokenizer("tiny-llama")
    text = "naïve café ☕ done"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(tok)
    deltas = [stream.add(t) for t in ids] + [stream.finish()]
    assert "".join(deltas) == text == stream.text
    assert not any("\ufffd" in d for d in deltas)


def test_sampling_is_seeded_per_request_whatever_shares_the_batch(lm):
    body, tok = lm
    engine = Engine(body, tok, stop_token_ids=[])
    prompt = tok(TEXTS[0])["input_ids"]
    hot = SamplingParams(max_new_tokens=12, temperature=1.5, top_p=0.9, seed=5)
    alone = engine.complete([Request(prompt, hot)])[0].token_ids
    crowd = engine.complete([Request(tok(TEXTS[1])["input_ids"], SamplingParams(max_new_tokens=12, temperature=1.0, seed=1)),
                             Request(prompt, hot)], batch_size=2)[1].token_ids
    assert alone == crowd
    other = engine.complete([Request(prompt, SamplingParams(max_new_tokens=12, temperature=1.5, top_p=0.9,
                                                            seed=6))])[0].token_ids
    greedy = engine.complete([Request(prompt, SamplingParams(max_new_tokens=12))])[0].token_ids
    assert alone != other and alone != greedy


def test_top_p_keeps_only_the_nucleus():
    from llmtune.generation.sampling import _nucleus

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]])
    kept = _nucleus(probs, torch.tensor([0.7, 0.3]))
    assert kept[0].tolist() == pytest.approx([0.5, 0.3, 0.0, 0.0])
    assert (kept[1] > 0).sum().item() == 2


@pytest.mark.parametrize("kwargs,field", [({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"),
                                          ({"top_p": 1.5}, "top_p"), ({"max_new_tokens": 0}, "max_new_tokens"),
                                          ({"stop": ("",)}, "stop"), ({"temperature": float("nan")}, "temperature")])
def test_bad_parameters_name_their_field(kwargs, field):
    with pytest.raises(BadParameter) as err:
        SamplingParams(**kwargs)
    assert err.value.field == field and field in str(err.value)


def test_a_cancel_flag_stops_between_tokens(lm):
    body, tok = lm
    engine = Engine(body, tok, stop_token_ids=[])
    flag = threading.Event()
    keep = Request(tok(TEXTS[0])["input_ids"], SamplingParams(max_new_tokens=20))
    cut = Request(tok(TEXTS[1])["input_ids"], SamplingParams(max_new_tokens=20), cancel=flag)
    batch = engine.start([keep, cut])
    for step, deltas in enumerate(batch):
        if step == 2:
            flag.set()
    kept, cancelled = batch.completions()
    assert cancelled.finish_reason == CANCELLED and len(cancelled.token_ids) == 3
    assert kept.finish_reason == LENGTH and len(kept.token_ids) == 20
    flag2 = threading.Event()
    flag2.set()  # cancelled before it started: no model call for it
    assert [d.finish_reason for d in engine.stream(Request([5, 6], cancel=flag2))] == [CANCELLED]


def test_the_context_bounds_prompt_and_answer(lm):
    body, tok = lm
    engine = Engine(body, tok, stop_token_ids=[], context_length=32)
    with pytest.raises(PromptTooLong, match="32"):
        engine.complete([Request(list(range(5, 37)))])
    with pytest.raises(BadParameter, match="empty"):
        engine.complete([Request([])])
    done = engine.complete([Request(list(range(5, 25)), SamplingParams(max_new_tokens=100))])[0]
    assert done.finish_reason == LENGTH and len(done.token_ids) == 12


def _greedy_without_cache(body, ids: list[int], n: int) -> list[int]:
    ids, out = list(ids), []
    for _ in range(n):
        with torch.no_grad():
            logits = body(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits
        out.append(int(logits[0, -1].argmax()))
        ids.append(out[-1])
    return out


@pytest.mark.parametrize("options", [{"name": "prefix", "num_virtual_tokens": 5},
                                     {"name": "soft-prompt", "num_virtual_tokens": 5}])
@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-gpt2"])
def test_prefix_and_soft_prompt_generate_through_the_cache(arch, options):
    """Batched, left-padded, with the KV cache: the same tokens as recomputing the whole
    sequence every step, and not the base model's tokens (the learned part is used)."""
    from llmtune.methods.registry import get_method
    from llmtune.train.assemble import prepare_for_training

    model, tok = tiny_causal_lm(arch)
    torch.manual_seed(1)
    method = get_method(options["name"])
    prepare_for_training(model, method(method.Config.model_validate(options)))
    body = model.body.eval()
    with torch.no_grad():  # a learned part big enough to matter
        for p in body.parameters():
            if p.requires_grad:
                p.mul_(3)
    prompts = [tok(t)["input_ids"] for t in TEXTS[:3]]
    params = SamplingParams(max_new_tokens=10)
    done = Engine(body, tok, stop_token_ids=[]).complete([Request(p, params) for p in prompts], batch_size=3)
    base, _ = tiny_causal_lm(arch)
    plain = Engine(base.body, tok, stop_token_ids=[]).complete([Request(p, params) for p in prompts], batch_size=3)
    for p, c, b in zip(prompts, done, plain):
        assert c.token_ids == _greedy_without_cache(body, p, 10)
        assert c.token_ids != b.token_ids


def test_prompt_formats_render_as_training_did():
    from llmtune.models.load import load_tokenizer

    tok = load_tokenizer("tiny-llama")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Name a colour."}]
    chat = PromptFormat(CHAT).render(tok, msgs)
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert chat == tok(text, add_special_tokens=False)["input_ids"]
    template = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"
    plain = PromptFormat(PLAIN, template).render(tok, msgs)
    first = "Be brief.\n\n### Instruction:\nHi\n\n### Response:\n"
    want = tok(first)["input_ids"] + tok("Hello", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] + \
        tok("### Instruction:\nName a colour.\n\n### Response:\n", add_special_tokens=False)["input_ids"]
    assert plain == want
    assert PromptFormat(TEXT).render(tok, msgs[1:2]) == tok("Hi")["input_ids"]
