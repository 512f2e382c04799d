"""Generated answers for evaluation, through the one generation core (llmtune.generation):
prompts batched by length, left-padded, greedy or sampled as eval.generation says."""

from __future__ import annotations


def generate_texts(body, tok, prompt_ids: list[list[int]], opts, *, batch_size: int, device=None,
                   stop_loops: bool = False) -> list[str]:
    """The text each prompt's continuation decodes to, cut at the first stop string and
    stripped. `opts`: the recipe's eval.generation; a sampled row i draws with seed
    `opts.seed + i`, so a sampled evaluation repeats exactly. `stop_loops`: end a
    continuation once it repeats itself, and cut the repeat (generation/loops.py). `device`:
    where the body already is (kept for callers; the engine reads it off the body)."""
    from llmtune.generation.engine import Engine
    from llmtune.generation.params import Request, SamplingParams

    sample = opts.strategy == "sample"
    requests = [Request(ids, SamplingParams(max_new_tokens=opts.max_new_tokens,
                                            temperature=opts.temperature if sample else 0.0,
                                            top_p=opts.top_p if sample else 1.0, seed=opts.seed + i,
                                            stop=tuple(s for s in opts.stop if s), stop_loops=stop_loops))
                for i, ids in enumerate(prompt_ids)]
    # End of sequence as the tokenizer names it: what eval has always stopped on.
    engine = Engine(body, tok, stop_token_ids=[tok.eos_token_id] if tok.eos_token_id is not None else [])
    return [c.text.strip() for c in engine.complete(requests, batch_size=batch_size)]


def cut_at_stop(text: str, stops: list[str]) -> str:
    cut = min((text.find(s) for s in stops if s and s in text), default=len(text))
    return text[:cut].strip()
