"""Batched generation for evaluation: prompts left-padded (decoder models continue from
the last position, so every prompt must end there), sorted by length, one batch at a time."""

from __future__ import annotations


def generate_texts(body, tok, prompt_ids: list[list[int]], opts, *, batch_size: int, device,
                   stop_loops: bool = False) -> list[str]:
    """The text each prompt's continuation decodes to, cut at the first stop string.
    `stop_loops`: end a continuation once it repeats itself, and cut the repeat (loops.py)."""
    import torch

    from llmtune.evaluate.loops import LoopStop, cut_loop

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    kwargs = {"max_new_tokens": opts.max_new_tokens, "pad_token_id": pad, "eos_token_id": tok.eos_token_id}
    if opts.strategy == "sample":
        kwargs.update(do_sample=True, temperature=opts.temperature, top_p=opts.top_p, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if stop_loops:
        from transformers import StoppingCriteriaList
    outputs: list[str] = [""] * len(prompt_ids)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    torch.manual_seed(opts.seed)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(prompt_ids[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, width - len(prompt_ids[i]):] = torch.tensor(prompt_ids[i])
                mask[r, width - len(prompt_ids[i]):] = 1
            # the loop stop needs this batch's prompt width: only generated tokens count
            extra = {"stopping_criteria": StoppingCriteriaList([LoopStop(width)])} if stop_loops else {}
            out = body.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs, **extra)
            rows = [row.tolist() for row in out[:, width:]]
            if stop_loops:
                rows = [cut_loop(row) for row in rows]
            texts = tok.batch_decode(rows, skip_special_tokens=True)
            for i, text in zip(idx, texts):
                outputs[i] = cut_at_stop(text, opts.stop)
    return outputs


def cut_at_stop(text: str, stops: list[str]) -> str:
    cut = min((text.find(s) for s in stops if s and s in text), default=len(text))
    return text[:cut].strip()
