"""`llmtune preview --time`: a few real optimizer steps on the first batches, timed, to
estimate the time per epoch. The model is built with real weights and the method applied,
trained in memory for those steps, then dropped: nothing is saved.

- Supervised methods: the loop's own step (same precision, batches grouped by length as in
  epoch 0, gradient accumulation).
- A method with its own fit that trains nothing by backprop (the linear probe embeds once):
  forward passes only, which is what its training costs.
- trl-backed preference methods: the policy's forward and backward on chosen and rejected
  (or completion and KL) sequences together, plus the frozen reference's forward when the
  method keeps one. This approximates trl's step (its logging and bookkeeping excluded).
- Online RL (prompts): not timed; generation dominates and depends on what the model
  writes. Run `llmtune train RECIPE --set train.max_steps=3` instead.
"""

from __future__ import annotations

import math
import time

WARMUP = 1


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak() -> dict:
    import torch

    if torch.cuda.is_available():
        return {"peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "peak_memory_of": "GPU memory allocated by torch"}
    import resource

    return {"peak_memory_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_memory_of": "the whole process's resident memory (libraries included)"}


def _time(step, steps: int) -> list[float]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    out = []
    for i in range(WARMUP + steps):
        _sync()
        start = time.perf_counter()
        step(i)
        _sync()
        if i >= WARMUP:
            out.append(time.perf_counter() - start)
    return out


def _result(seconds: list[float], steps_per_epoch: int, what: str) -> dict:
    per_step = sorted(seconds)[len(seconds) // 2]
    return {"what": what, "timed_steps": len(seconds), "seconds_per_step": round(per_step, 4),
            "steps_per_epoch": steps_per_epoch, "seconds_per_epoch": round(per_step * steps_per_epoch, 1), **_peak()}


def time_supervised(recipe, method, raw: list[dict], labels, tok, steps: int) -> dict:
    import torch

    from llmtune.data.batching import collate, epoch_batches
    from llmtune.models.build import build_task_model
    from llmtune.train.assemble import prepare_for_training
    from llmtune.train.loop import accelerator_for
    from llmtune.train.optim import build_optimizer

    t = recipe.train
    torch.manual_seed(t.seed)
    model = build_task_model(recipe, labels)
    prepare_for_training(model, method)
    accelerator = accelerator_for(t.precision)
    batches = epoch_batches([len(e["input_ids"]) for e in raw], t.batch_size, t.seed, 0,
                            group_by_length=t.group_by_length)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def batch(i):
        idx = batches[i % len(batches)]
        return {k: v.to(accelerator.device) for k, v in collate([raw[j] for j in idx], pad).items()}

    if method.trains_itself:  # trains by its own means: what it costs is forward passes
        model = accelerator.prepare(model).eval()

        def forward(i):
            with torch.inference_mode(), accelerator.autocast():
                b = batch(i)
                model(b["input_ids"], b["attention_mask"])

        return _result(_time(forward, steps), len(batches), "forward passes (the method embeds the data once)")
    optimizer = build_optimizer(model, t.lr, t.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()

    def step(i):
        for k in range(t.grad_accum):
            b = batch(i * t.grad_accum + k)
            with accelerator.autocast():
                loss, _ = model(b["input_ids"], b["attention_mask"], b["labels"])
            accelerator.backward(loss / t.grad_accum)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return _result(_time(step, steps), math.ceil(len(batches) / t.grad_accum), "optimizer steps of the training loop")


def time_preference(recipe, method, examples, tok, steps: int) -> dict | None:
    """None for online RL (not timed)."""
    import torch

    if recipe.data.task == "prompts":
        return None
    from llmtune.device import default_device

    t = recipe.train
    torch.manual_seed(t.seed)
    model = method.load_model(recipe, tok)
    reference = _frozen_copy(model) if method.holds_reference_copy() else None
    model = method.apply(model, causal=method.model_kind != "reward")
    device = default_device()
    model.to(device).train()
    if reference is not None:
        reference.to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.lr)
    seqs = [s for ex in examples for s in ex.sequences]
    per_batch = 2 * t.batch_size  # chosen + rejected, or completion + KL pair
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def tensors(i):
        group = [seqs[(i * per_batch + j) % len(seqs)] for j in range(per_batch)]
        width = max(len(s.ids) for s in group)
        ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(group):
            ids[r, :len(s.ids)] = torch.tensor(s.ids)
            mask[r, :len(s.ids)] = 1
        return ids.to(device), mask.to(device)

    def step(i):
        for k in range(t.grad_accum):
            ids, mask = tensors(i * t.grad_accum + k)
            if reference is not None:
                with torch.no_grad():
                    reference(input_ids=ids, attention_mask=mask)
            out = model(input_ids=ids, attention_mask=mask)
            out.logits.float().mean().backward()  # the cost of a backward pass, whatever the loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    steps_per_epoch = math.ceil(len(examples) / t.batch_size / t.grad_accum)
    return _result(_time(step, steps), max(1, steps_per_epoch),
                   "policy forward + backward on both sequences of each pair" +
                   (" and the reference's forward" if reference is not None else ""))


def _frozen_copy(model):
    """The reference the method keeps: the model as it starts, never updated."""
    import copy

    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference
