"""The training loop: one Accelerate loop for every supervised method.

Methods plug in through Method.apply/save; this file never looks at a method's name.
Habits kept from the first line: batches padded to their own longest sequence and grouped
by length, no host sync in the step except the one finite-loss check per optimizer step,
tokens/s counted on real (non-padding) tokens.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from contextlib import nullcontext

import torch

from llmtune.data.batching import collate, epoch_batches
from llmtune.data.pipeline import prepare_data
from llmtune.errors import TrainingDiverged
from llmtune.evaluate.supervised import evaluate_examples, headline
from llmtune.models.build import build_task_model
from llmtune.models.load import load_tokenizer
from llmtune.models.task_model import write_info
from llmtune.train import checkpoint as ckpt
from llmtune.train.optim import build_optimizer, build_scheduler
from llmtune.train.run_dir import build_manifest, read_manifest, write_manifest


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the next step and exits cleanly."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some test runners)
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def accelerator_for(precision: str):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    return Accelerator(mixed_precision="no" if precision == "fp32" else precision, cpu=not cuda)


def train_loop(ctx, method) -> dict:
    r = ctx.recipe
    t = r.train
    rep = ctx.reporter
    run = ctx.run
    torch.manual_seed(t.seed)
    accelerator = accelerator_for(t.precision)

    tok = load_tokenizer(r.model.name, r.model.trust_remote_code, r.model.revision)
    data = prepare_data(r.data, tok, ctx.base_dir)
    s = data.summary
    rep.log(f"data: {len(data.train)} train / {len(data.eval)} eval examples"
            + (f"; {s['truncated']} truncated to {r.data.max_length} tokens" if s.get("truncated") else "")
            + (f"; {s['dropped_empty']} empty rows dropped" if s.get("dropped_empty") else ""))
    model = build_task_model(r, data.labels)
    method.apply(model)
    trainable, total = model.trainable_parameters()
    rep.log(f"method {method.name}: {trainable:,} trainable of {total:,} parameters "
            f"({100 * trainable / total:.3f}%)")

    batches_per_epoch = math.ceil(len(data.train) / t.batch_size)
    total_steps = t.max_steps or max(1, math.ceil(t.epochs * batches_per_epoch / t.grad_accum))
    optimizer = build_optimizer(model, t.lr, t.weight_decay)
    scheduler = build_scheduler(optimizer, t.scheduler, total_steps, int(t.warmup_ratio * total_steps))
    model, optimizer = accelerator.prepare(model, optimizer)

    manifest = build_manifest(ctx.loaded.path, t.seed, {
        "method": method.name, "task": r.data.task, "model": r.model.name,
        "data_fingerprint": data.fingerprint, "data_summary": s,
        "tokenizer_hash": data.fingerprint.get("cache_key") and _tok_hash(tok),
        "trainable_parameters": trainable, "total_parameters": total,
        "trainable_percent": 100 * trainable / total, "total_steps": total_steps, **ctx.manifest_extra,
    })
    position = {"epoch": 0, "batch": 0, "tokens": 0, "elapsed": 0.0, "skipped": 0}
    step = 0
    if ctx.resume:
        found = ckpt.complete_checkpoints(run.checkpoints)
        if found:
            _warn_if_changed(read_manifest(run), manifest, rep)
            state = ckpt.load_checkpoint(found[-1], accelerator.unwrap_model(model), optimizer, scheduler)
            step = state["step"]
            position.update({k: state[k] for k in position if k in state})
            rep.log(f"resumed from {found[-1].name} (epoch {position['epoch']}, batch {position['batch']})")
        else:
            rep.log("no complete checkpoint to resume from; starting from the beginning")
    _drop_metrics_after(run, step)
    write_manifest(run, manifest)

    pad_id = tok.pad_token_id
    lengths = [len(e["input_ids"]) for e in data.train]
    device = accelerator.device
    window_loss = torch.zeros((), device=device)
    window_tokens = torch.zeros((), dtype=torch.long, device=device)
    window_micro = 0
    window_start = time.perf_counter()
    run_start = time.perf_counter() - position["elapsed"]
    model.train()
    micro = 0
    step_loss = torch.zeros((), device=device)
    rank, world = accelerator.process_index, accelerator.num_processes
    result = {"steps": total_steps}

    with StopRequested() as stop, rep.progress(total_steps, f"train {method.name}", completed=step) as advance:
        while step < total_steps:
            batches = epoch_batches(lengths, t.batch_size, t.seed, position["epoch"],
                                    group_by_length=t.group_by_length)
            usable = len(batches) - len(batches) % world if world > 1 else len(batches)
            while position["batch"] < usable and step < total_steps:
                idx = batches[position["batch"] + rank]
                position["batch"] += world
                batch = {k: v.to(device) for k, v in collate([data.train[i] for i in idx], pad_id).items()}
                micro += 1
                last_micro = micro == t.grad_accum
                sync = nullcontext() if last_micro or world == 1 else accelerator.no_sync(model)
                with sync, accelerator.autocast():
                    loss, _ = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
                    accelerator.backward(loss / t.grad_accum)
                step_loss += loss.detach() / t.grad_accum
                window_tokens += batch["attention_mask"].sum()
                if not last_micro:
                    continue
                micro = 0
                # One host sync per optimizer step: a NaN must never reach the weights.
                if not torch.isfinite(step_loss):
                    optimizer.zero_grad(set_to_none=True)
                    position["skipped"] += 1
                    if t.on_nonfinite_loss == "stop" or position["skipped"] > t.max_skipped_steps:
                        last = ckpt.complete_checkpoints(run.checkpoints)
                        keep = f"; the last good checkpoint is {last[-1]}" if last else ""
                        raise TrainingDiverged(
                            f"loss became {step_loss.item()} at step {step + 1}{keep}. Lower train.lr, "
                            f"check the data, or set train.on_nonfinite_loss: skip")
                    rep.warn(f"non-finite loss at step {step + 1}; step skipped ({position['skipped']} so far)")
                    step_loss.zero_()
                    continue
                if t.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                window_loss += step_loss
                window_micro += 1
                step_loss = torch.zeros((), device=device)
                advance(1)

                if step % t.log_every == 0 or step == total_steps:
                    now = time.perf_counter()
                    tokens = int(window_tokens.item()) * world
                    position["tokens"] += tokens
                    record = {"step": step, "epoch": position["epoch"] + position["batch"] / max(usable, 1),
                              "loss": window_loss.item() / max(window_micro, 1),
                              "lr": scheduler.get_last_lr()[0],
                              "tokens_per_s": tokens / max(now - window_start, 1e-9)}
                    if accelerator.is_main_process:
                        run.log_metrics(record)
                    rep.log(f"step {step}/{total_steps} loss {record['loss']:.4f} lr {record['lr']:.2e} "
                            f"{record['tokens_per_s']:.0f} tok/s")
                    window_loss.zero_(); window_tokens.zero_(); window_micro = 0
                    window_start = time.perf_counter()
                if t.eval_every and step % t.eval_every == 0 and step != total_steps and data.eval:
                    _log_eval(run, rep, step, model, data, r, accelerator)
                position["elapsed"] = time.perf_counter() - run_start
                if (t.save_every and step % t.save_every == 0) or stop.signal:
                    if accelerator.is_main_process:
                        ckpt.save_checkpoint(run.checkpoints, step, accelerator.unwrap_model(model), optimizer,
                                             scheduler, position, t.keep_checkpoints)
                    accelerator.wait_for_everyone()
                if stop.signal:
                    name = signal.Signals(stop.signal).name
                    rep.log(f"{name}: stopped at step {step}, checkpoint saved. Resume with: "
                            f"llmtune train {ctx.loaded.path} --resume")
                    accelerator.end_training()
                    raise KeyboardInterrupt
                if ctx.stop_after_steps and step >= ctx.stop_after_steps:
                    os._exit(9)  # testing aid: behave like SIGKILL (no cleanup, no final save)
            if position["batch"] >= usable:
                position["epoch"] += 1
                position["batch"] = 0

    unwrapped = accelerator.unwrap_model(model)
    train_seconds = time.perf_counter() - run_start
    final_eval = {}
    if data.eval:
        final_eval = _log_eval(run, rep, step, model, data, r, accelerator)
    if accelerator.is_main_process:
        _save_final(run, method, unwrapped, tok, r, data.labels)
        manifest.update({"train_seconds": train_seconds, "steps": step,
                         "peak_memory_mb": _peak_memory_mb(), "final_eval": headline(final_eval)})
        write_manifest(run, manifest)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result.update({"steps": step, "train_seconds": train_seconds, "trainable_parameters": trainable,
                   "total_parameters": total, "eval": final_eval, "run_dir": str(run.path)})
    return result


def _log_eval(run, rep, step, model, data, r, accelerator) -> dict:
    examples = data.eval[: r.eval.limit] if r.eval.limit else data.eval
    metrics = evaluate_examples(accelerator.unwrap_model(model), examples, batch_size=r.eval.batch_size,
                                pad_id=_pad(model, accelerator), labels=data.labels, device=accelerator.device)
    if accelerator.is_main_process:
        run.log_metrics({"step": step, **{f"eval_{k}": v for k, v in headline(metrics).items()}})
    rep.log(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in headline(metrics).items()
                                                  if isinstance(v, float)))
    return metrics


def _pad(model, accelerator) -> int:
    body = accelerator.unwrap_model(model).body
    pad = getattr(body.config, "pad_token_id", None)
    return 0 if pad is None else pad


def _save_final(run, method, model, tok, recipe, labels) -> None:
    """final/ is written to a temp folder and renamed: a crash never leaves half a model."""
    tmp = run.path / ".final.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    method.save(model, tmp)
    tok.save_pretrained(tmp)
    write_info(tmp, {"task": recipe.data.task, "method": method.name, "base_model": recipe.model.name,
                     "pooling": recipe.model.pooling if model.head is not None else None,
                     "labels": labels})
    if run.final.exists():
        shutil.rmtree(run.final)
    os.replace(tmp, run.final)


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB (process RSS)


def _tok_hash(tok) -> str:
    from llmtune.data.cache import tokenizer_fingerprint

    return tokenizer_fingerprint(tok)


def _drop_metrics_after(run, step: int) -> None:
    """On resume, records written after the checkpoint belong to the lost part of the run."""
    kept = [rec for rec in run.read_metrics() if rec.get("step", 0) <= step] if step else []
    tmp = run.metrics.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(rec) + "\n" for rec in kept))
    os.replace(tmp, run.metrics)


_WATCHED = ("versions", "data_fingerprint", "tokenizer_hash", "seed", "method", "model", "total_steps")


def _warn_if_changed(old: dict | None, new: dict, rep) -> None:
    if not old:
        return
    for key in _WATCHED:
        if old.get(key) != new.get(key):
            rep.warn(f"resuming, but {key} changed since the checkpoint was written: "
                     f"{old.get(key)!r} -> {new.get(key)!r}; the result may differ from an uninterrupted run")
