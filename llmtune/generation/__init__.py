"""The one generation core: batched, left-padded decoding with a KV cache, per-request sampling
(greedy by default; temperature, top_p, seed), stop tokens and stop strings, streamed text
deltas and a cancel flag checked between tokens. `llmtune chat`, `generate`, `serve`, `ask`
and `eval`'s generation all go through `Engine`; no verb writes its own decoding loop.

params.py   what a request asks for (no torch)
prompts.py  messages -> token ids the way a run trained (chat template, plain template, text)
text.py     token ids -> text deltas, cut at stop strings
loops.py    stop an answer that repeats itself
sampling.py next-token choice per row
decoder.py  one batch decoded step by step
engine.py   the model's generation entry points (steps, stream, complete)
"""
