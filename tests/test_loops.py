"""Stopping a generated answer that repeats itself (llmtune ask): only the generated tokens
count, the first copy of the repeated span stays, and an answer that never repeats a whole
window is left alone."""

from __future__ import annotations

import torch

from llmtune.generation.loops import LoopWatch, cut_loop, first_repeat


def test_cut_keeps_the_first_copy_of_a_loop():
    ids = [7, 8] + [1, 2, 3, 4] * 6
    assert first_repeat(ids, window=4) == 6
    assert cut_loop(ids, window=4) == [7, 8, 1, 2, 3, 4]
    assert cut_loop([5] * 20, window=4) == [5]  # a one-token loop


def test_no_whole_window_repeated_means_no_cut():
    ids = [1, 2, 3, 9, 1, 2, 3, 8, 1, 2, 3, 7]  # "1 2 3" recurs, but never four tokens in a row
    assert first_repeat(ids, window=4) is None
    assert cut_loop(ids, window=4) == ids
    assert cut_loop([1, 2], window=4) == [1, 2]


def test_the_streaming_watch_releases_exactly_the_cut():
    """Token by token, LoopWatch hands out what cut_loop keeps, never a token the cut removes,
    and it looks at what it was given only (the caller feeds generated tokens, not the prompt)."""
    for ids in ([5, 6, 7, 5, 6, 7, 5], [1, 2, 3, 4, 9, 8, 7], [7, 8] + [1, 2, 3, 4] * 6, [5] * 20, [1, 2]):
        watch, released = LoopWatch(window=3), []
        for t in ids:
            released += watch.push(t)
            assert released == cut_loop(ids, window=3)[:len(released)]
        released += watch.flush()
        assert released == cut_loop(ids, window=3)
        assert watch.looped == (first_repeat(ids, window=3) is not None)


def test_generation_with_loop_stop_on_a_tiny_model():
    """tiny-llama (random weights) loops under greedy decoding: with the stop, the answer ends
    at the loop, with no repeated window left in it; without, it runs to the limit."""
    from llmtune.evaluate.generation import generate_texts
    from llmtune.models.load import load_body, load_tokenizer
    from llmtune.recipe.eval_section import GenerationOptions

    torch.manual_seed(0)
    tok = load_tokenizer("tiny-llama", False)
    body = load_body("tiny-llama", "causal_lm").eval()
    prompt = tok("Question: what is in the sources?\nAnswer:")["input_ids"]
    opts = GenerationOptions(max_new_tokens=96, strategy="greedy")
    plain = generate_texts(body, tok, [prompt], opts, batch_size=1, device=torch.device("cpu"))[0]
    stopped = generate_texts(body, tok, [prompt], opts, batch_size=1, device=torch.device("cpu"), stop_loops=True)[0]
    # (decoded text does not re-tokenize to the same ids, so the check is on the text)
    assert len(stopped) < len(plain) and plain.startswith(stopped), (plain, stopped)
    rest = plain[len(stopped):].strip()
    assert rest[:15] in stopped, "what was cut off must restate what was kept"
