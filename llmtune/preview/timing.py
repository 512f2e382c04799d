"""`llmtune preview --time`: a few real optimizer steps on the first batches, timed, to
estimate the time per epoch. The model is built with real weights and the method applied,
trained in memory for those steps, then dropped: nothing is saved.

- Supervised methods: the loop's own optimizer step (train/stepping.py), set up as `llmtune
  train` sets it up: precision, speed switches, packing, data order, gradient accumulation,
  clipping and the non-finite check.
- A method with its own fit that trains nothing by backprop (the linear probe embeds once;
  in-context prompting trains nothing): forward passes only.
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


def time_supervised(recipe, method, raw: list[dict], labels, tok, steps: int, reporter) -> dict:
    """The loop's own optimizer step (train/stepping.py): the same set-up, speed switches,
    packing, data order and update as `llmtune train`, on the first batches of epoch 0."""
    import torch

    from llmtune.train.loop import Position, accelerator_for
    from llmtune.train.stepping import OptimizerStep, build_training, training_rows

    t = recipe.train
    torch.manual_seed(t.seed)
    accelerator = accelerator_for(t.precision)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = training_rows(raw, recipe, reporter)
    if method.trains_itself:  # trains by its own means, without backprop: what it costs is forward passes
        return _time_forward(recipe, method, rows, labels, pad, accelerator, steps)
    training = build_training(recipe, method, rows, labels, tok, accelerator, reporter)
    stepper, position = OptimizerStep(training, accelerator, rows, pad, t.max_grad_norm), Position()
    training.model.train()

    def step(i):
        plan = training.order.take_step(position, t.grad_accum)
        for n, idx in enumerate(plan.mine):
            stepper.micro_batch(idx, plan.loss_items, last=n == len(plan.mine) - 1)
        if not stepper.apply(i + 1):
            stepper.discard()
        stepper.take_loss()

    timed = _result(_time(step, steps), training.order.total_steps(1.0, t.grad_accum),
                    "optimizer steps of the training loop (its own step, speed switches included)")
    return {**timed, "speed_features": {**training.speed_features, "nonfinite_check": training.guard.mode}}


def _time_forward(recipe, method, rows, labels, pad: int, accelerator, steps: int) -> dict:
    import torch

    from llmtune.data.batching import collate, epoch_batches
    from llmtune.models.build import build_task_model
    from llmtune.train.assemble import prepare_for_training

    t = recipe.train
    model = build_task_model(recipe, labels)
    prepare_for_training(model, method)
    model = accelerator.prepare(model).eval()
    batches = epoch_batches([len(e["input_ids"]) for e in rows], t.batch_size, t.seed, 0,
                            group_by_length=t.group_by_length)

    def forward(i):
        idx = batches[i % len(batches)]
        b = {k: v.to(accelerator.device) for k, v in collate([rows[j] for j in idx], pad).items()}
        with torch.inference_mode(), accelerator.autocast():
            model(b["input_ids"], b["attention_mask"])

    return _result(_time(forward, steps), len(batches), "forward passes (the method trains without backprop)")


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
