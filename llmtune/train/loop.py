"""The training loop: one Accelerate loop for every supervised method.

Methods plug in through Method.apply/save; this file never looks at a method's name.
Habits kept from the first line: batches padded to their own longest sequence and grouped
by length, no host sync in the step except the one finite check per optimizer step,
tokens/s counted on real (non-padding) tokens.

Resume is exact: a checkpoint holds the trainable weights, optimizer, schedule, RNG
streams, data position (epoch, batch) and the logging window, and data order is a pure
function of (seed, epoch), so a resumed run replays exactly what the lost part did.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import nullcontext

import torch

from llmtune.data.batching import collate, epoch_batches
from llmtune.data.pipeline import prepare_data
from llmtune.data.prompt_style import describe as describe_rendering
from llmtune.errors import TrainingDiverged
from llmtune.evaluate.supervised import evaluate_examples, headline
from llmtune.models.build import build_task_model
from llmtune.models.load import load_tokenizer
from llmtune.models.chat_template import template_hash
from llmtune.models.task_model import write_info
from llmtune.train import checkpoint as ckpt
from llmtune.train.optim import build_optimizer, build_scheduler
from llmtune.train.run_dir import (
    build_manifest, manifest_changes, peak_memory_mb, read_manifest, recipe_hash, write_final, write_manifest,
)

HOLD_ENV = "LLMTUNE_HOLD_AT_STEP"
"""Testing aid: after optimizer step N, run one more forward/backward (so the process sits
mid gradient accumulation), then wait for a signal. Tests SIGKILL or SIGTERM the process
there, at a step they choose, instead of racing a timer."""


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
    rep.log(_data_line(data, r.data.max_length))
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
        "recipe_hash": recipe_hash(r), "data_fingerprint": data.fingerprint, "data_summary": data.summary,
        "tokenizer_hash": _tok_hash(tok), "trainable_parameters": trainable, "total_parameters": total,
        "chat_template_hash": template_hash(tok),
        "trainable_percent": 100 * trainable / total, "total_steps": total_steps, **ctx.manifest_extra,
    })
    position = {"epoch": 0, "batch": 0, "tokens": 0, "elapsed": 0.0, "skipped": 0}
    window = {"loss": 0.0, "tokens": 0, "steps": 0}
    step = 0
    if ctx.resume:
        step = _resume(run, manifest, accelerator.unwrap_model(model), optimizer, scheduler, position, window, rep)
    if accelerator.is_main_process:
        _drop_metrics_after(run, step)
        write_manifest(run, manifest)

    pad_id = tok.pad_token_id
    lengths = [len(e["input_ids"]) for e in data.train]
    device = accelerator.device
    window_loss = torch.tensor(window["loss"], device=device)
    window_tokens = torch.tensor(window["tokens"], dtype=torch.long, device=device)
    window_micro = window["steps"]
    window_start = time.perf_counter()
    run_start = time.perf_counter() - position["elapsed"]
    model.train()
    micro = 0
    step_loss = torch.zeros((), device=device)
    rank, world = accelerator.process_index, accelerator.num_processes
    hold_at = _hold_step()
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
                if hold_at is not None and step == hold_at:
                    _hold(stop, rep, step)
                    hold_at = None
                if not last_micro:
                    continue
                micro = 0
                norm = accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm) if t.max_grad_norm else None
                # One host sync per optimizer step: a NaN/inf must never reach the weights.
                finite = torch.isfinite(step_loss) if norm is None else torch.isfinite(step_loss) & torch.isfinite(norm)
                if not bool(finite):
                    optimizer.zero_grad(set_to_none=True)
                    position["skipped"] += 1
                    _on_nonfinite(t, run, rep, step + 1, step_loss, norm, position["skipped"])
                    step_loss.zero_()
                    window_tokens.zero_()
                    continue
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
                    # Every rank reaches this step together: log the mean loss over ranks
                    # and the tokens all ranks processed.
                    logged_loss = accelerator.reduce(window_loss.clone(), "mean") if world > 1 else window_loss
                    tokens = int((accelerator.reduce(window_tokens.clone(), "sum") if world > 1
                                  else window_tokens).item())
                    position["tokens"] += tokens
                    record = {"step": step, "epoch": position["epoch"] + position["batch"] / max(usable, 1),
                              "loss": logged_loss.item() / max(window_micro, 1),
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
                        window_state = {"loss": window_loss.item(), "tokens": int(window_tokens.item()),
                                        "steps": window_micro}
                        ckpt.save_checkpoint(run.checkpoints, step, accelerator.unwrap_model(model), optimizer,
                                             scheduler, {**position, "window": window_state},
                                             t.keep_checkpoints)
                    accelerator.wait_for_everyone()
                if stop.signal:
                    _exit_on_signal(ctx, rep, accelerator, stop.signal, step)
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
        manifest.update({"train_seconds": train_seconds, "steps": step, "skipped_steps": position["skipped"],
                         "peak_memory_mb": peak_memory_mb(), "final_eval": headline(final_eval)})
        write_manifest(run, manifest)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result.update({"steps": step, "train_seconds": train_seconds, "trainable_parameters": trainable,
                   "total_parameters": total, "eval": final_eval, "run_dir": str(run.path)})
    return result


def _data_line(data, max_length: int) -> str:
    s = data.summary
    line = f"data: {len(data.train)} train / {len(data.eval)} eval examples"
    if s.get("truncated"):
        line += f"; {s['truncated']} truncated to {max_length} tokens"
    if s.get("dropped_empty"):
        line += f"; {s['dropped_empty']} rows with empty text dropped (data.empty_rows: drop)"
    if s.get("dropped_truncated"):
        line += (f"; {s['dropped_truncated']} rows dropped because truncation cut off everything "
                 f"the loss trains on (raise data.max_length to keep them)")
    if rendering := describe_rendering(s):
        line += f"; {rendering}"
    return line


def _resume(run, manifest, model, optimizer, scheduler, position, window, rep) -> int:
    """Restore the newest complete checkpoint; returns the step it was written at."""
    old = read_manifest(run)
    for warning in manifest_changes(old, manifest):
        rep.warn(warning)
    if old:
        manifest["resumes"] = old.get("resumes", []) + [manifest["created"]]
        manifest["created"] = old.get("created", manifest["created"])
    found = ckpt.load_latest(run.checkpoints, model, optimizer, scheduler, rep.warn)
    if found is None:
        rep.log("no complete checkpoint to resume from; starting from the beginning")
        ckpt.discard_after(run.checkpoints, 0)
        return 0
    path, state = found
    position.update({k: state[k] for k in position if k in state})
    window.update(state.get("window", {}))
    ckpt.discard_after(run.checkpoints, state["step"])
    rep.log(f"resumed from {path.name} (epoch {position['epoch']}, batch {position['batch']})")
    return state["step"]


def _on_nonfinite(t, run, rep, step: int, loss, norm, skipped: int) -> None:
    what = f"loss {loss.item()}" if not torch.isfinite(loss) else f"gradient norm {norm.item()}"
    if t.on_nonfinite_loss == "skip" and skipped <= t.max_skipped_steps:
        rep.warn(f"non-finite {what} at step {step}; step skipped, weights unchanged "
                 f"({skipped} of at most {t.max_skipped_steps} skipped)")
        return
    last = ckpt.complete_checkpoints(run.checkpoints)
    keep = (f"The last good checkpoint is {last[-1]}; after changing the recipe, continue from it with "
            f"--resume, or start over with --overwrite." if last else
            "No checkpoint was written before it (set train.save_every to keep some).")
    why = (f"more than train.max_skipped_steps ({t.max_skipped_steps}) steps were skipped"
           if t.on_nonfinite_loss == "skip" else "train.on_nonfinite_loss is stop")
    raise TrainingDiverged(
        f"training diverged: non-finite {what} at step {step}; stopped because {why}. The weights were "
        f"not updated with it. Lower train.lr, keep train.max_grad_norm set, check the data, or set "
        f"train.on_nonfinite_loss: skip. {keep}")


def _exit_on_signal(ctx, rep, accelerator, signum: int, step: int):
    from llmtune.train.run import default_output

    name = signal.Signals(signum).name
    recipe = ctx.loaded.path or "RECIPE"
    out = "" if ctx.loaded.path and default_output(ctx.loaded) == ctx.run.path else f" --output {ctx.run.path}"
    rep.log(f"{name}: stopped at step {step}; checkpoint saved to {ctx.run.checkpoints / f'step-{step}'}. "
            f"Resume with: llmtune train {recipe}{out} --resume (repeat any --set options)")
    accelerator.end_training()
    raise SystemExit(128 + signum)  # the shell's convention for "ended by signal N"


def _hold_step() -> int | None:
    value = os.environ.get(HOLD_ENV)
    return int(value) if value and value.isdigit() else None


def _hold(stop: StopRequested, rep, step: int) -> None:
    rep.log(f"{HOLD_ENV}: holding after step {step} (mid-accumulation) until a signal arrives")
    while stop.signal is None:
        time.sleep(0.02)


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
    def fill(folder):
        method.save(model, folder)
        tok.save_pretrained(folder)
        write_info(folder, {"task": recipe.data.task, "method": method.name, "base_model": recipe.model.name,
                            "pooling": recipe.model.pooling if model.head is not None else None,
                            "labels": labels})

    write_final(run, fill)


def _tok_hash(tok) -> str:
    from llmtune.data.cache import tokenizer_fingerprint

    return tokenizer_fingerprint(tok)


def _drop_metrics_after(run, step: int) -> None:
    """On resume, records written after the checkpoint belong to the lost part of the run."""
    kept = [rec for rec in run.read_metrics() if rec.get("step", 0) <= step] if step else []
    tmp = run.metrics.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(rec) + "\n" for rec in kept))
    os.replace(tmp, run.metrics)
