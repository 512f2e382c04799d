"""The torch half of `contrastive`: llmtune's own stepping loop for in-batch negatives.

One process. Every distinct text of the pairs (and of the mined negatives) is tokenized
once; a step pads its queries and its texts separately (queries are short), embeds both
with the body under training, and takes the cross-entropy of each query's scaled cosines
against all the batch's texts, its own positive being the target. AdamW (no decay on
biases and norms), linear warmup then the recipe's decay, gradient clipping, checkpoints
every train.save_every steps, and a stop on SIGINT/SIGTERM after a checkpoint.
"""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

from llmtune.errors import UserError
from llmtune.methods.job import Outcome
from llmtune.methods.retrieval import _checkpoints
from llmtune.methods.retrieval._batches import Row, pad, plan
from llmtune.methods.retrieval._optim import adamw, schedule
from llmtune.methods.retrieval._texts import Texts, pairs_fingerprint, prepare


class Trainer:
    def __init__(self, job, method, body, texts: Texts, rows: list[Row], pad_id: int):
        from llmtune.models.encoder import hidden_states_fn

        self.job, self.cfg, self.t = job, method.config, job.recipe.train
        self.body, self.texts, self.rows, self.pad_id = body, texts, rows, pad_id
        self.device = next(body.parameters()).device
        self.hidden = hidden_states_fn(body)
        self.pooling = job.recipe.model.pooling
        self.steps = plan(rows, self.t.batch_size, self.t.seed, self.t.epochs, self.t.max_steps)
        self.optimizer = adamw(body, self.t.lr, self.t.weight_decay)
        self.scheduler = schedule(self.optimizer, self.t.scheduler, len(self.steps),
                                  int(self.t.warmup_ratio * len(self.steps)))
        self.autocast = self.device.type == "cuda" and self.t.precision in ("auto", "bf16") and \
            torch.cuda.is_bf16_supported()
        self.step, self.tokens, self.skipped = 0, 0, 0

    def embed(self, text_ids: list[int]):
        ids, mask = pad([self.texts.ids[i] for i in text_ids], self.pad_id, self.device)
        self.tokens += int(mask.sum())
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            hidden = self.hidden(ids, mask)
        from llmtune.models.task_model import pool

        return F.normalize(pool(hidden.float(), mask, self.pooling), dim=-1)

    def loss(self, batch: list[int]):
        rows = [self.rows[i] for i in batch]
        queries = self.embed([r.query for r in rows])
        docs = self.embed([r.positive for r in rows] + [n for r in rows for n in r.negatives])
        scores = self.cfg.scale * queries @ docs.T
        return F.cross_entropy(scores, torch.arange(len(rows), device=self.device))

    def resume(self) -> int:
        found = _checkpoints.complete(self.job.checkpoints)
        if self.job.resume and found:
            self.step = _checkpoints.load(found[-1], self.body, self.optimizer, self.scheduler)
            torch.manual_seed(self.t.seed + self.step)  # dropout after a resume: fresh masks, still seeded
            self.job.reporter.log(f"resumed from {found[-1]} (step {self.step} of {len(self.steps)})")
        return self.step

    def checkpoint(self):
        return _checkpoints.save(self.job.checkpoints, self.step, self.body, self.optimizer, self.scheduler,
                                 self.t.keep_checkpoints)

    def run(self, on_eval) -> Outcome | None:
        """Train to the end (None) or to a stop: an Outcome saying why."""
        t, job = self.t, self.job
        self.body.train()
        window, started = [], time.perf_counter()
        with job.reporter.progress(len(self.steps), "contrastive", completed=self.step) as advance:
            while self.step < len(self.steps):
                loss = self.loss(self.steps[self.step])
                if not torch.isfinite(loss):
                    stop = self._nonfinite(float(loss))
                    if stop is not None:
                        return stop
                    continue
                loss.backward()
                if t.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_([p for p in self.body.parameters() if p.requires_grad],
                                                   t.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                window.append(float(loss.detach()))
                advance(1, loss=f"{window[-1]:.4f}")
                if self.step % t.log_every == 0 or self.step == len(self.steps):
                    self._log(window, started)
                    window = []
                if t.eval_every and self.step % t.eval_every == 0 and self.step < len(self.steps):
                    on_eval(self.step)
                if t.save_every and self.step % t.save_every == 0:
                    self.checkpoint()
                signal = job.stop_requested()
                if signal is not None:
                    return self._stopped(signal)
        return None

    def _log(self, window: list[float], started: float) -> None:
        seconds = max(time.perf_counter() - started, 1e-9)
        record = {"step": self.step, "loss": sum(window) / len(window), "lr": self.scheduler.get_last_lr()[0],
                  "tokens_per_s": self.tokens / seconds}
        self.job.log(record)
        if not self.job.interactive:
            self.job.reporter.log(f"step {self.step}/{len(self.steps)} loss {record['loss']:.4f} "
                                  f"lr {record['lr']:.2e} {record['tokens_per_s']:.0f} tokens/s")

    def _nonfinite(self, value: float) -> Outcome | None:
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped += 1
        if self.t.on_nonfinite_loss == "skip" and self.skipped <= self.t.max_skipped_steps:
            self.step += 1  # the batch is dropped; the schedule moves on
            self.scheduler.step()
            return None
        found = _checkpoints.complete(self.job.checkpoints)
        return Outcome(steps=self.step, trainable_parameters=0, total_parameters=0, tokenizer=None,
                       diverged=f"the loss was {value} at step {self.step + 1}.",
                       last_checkpoint=found[-1] if found else None)

    def _stopped(self, signal: int) -> Outcome:
        path = self.checkpoint()
        return Outcome(steps=self.step, trainable_parameters=0, total_parameters=0, tokenizer=None,
                       stopped_by=signal, last_checkpoint=path)


def refuse_unsupported(recipe) -> None:
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("method contrastive trains in one process (its negatives come from one batch); run it "
                        "without torchrun/accelerate launch")
    if recipe.train.grad_accum != 1:
        raise UserError(f"train.grad_accum {recipe.train.grad_accum}: method contrastive takes its negatives from "
                        f"one forward batch, so accumulating would not add any; set grad_accum: 1 and raise "
                        f"train.batch_size instead")


def train(job, method) -> Outcome:
    from llmtune.data.cache import tokenizer_fingerprint
    from llmtune.methods.retrieval._retrieval_eval import retrieval_encoder, score_encoder
    from llmtune.models.task_model import TaskModel

    r, rep = job.recipe, job.reporter
    refuse_unsupported(r)
    torch.manual_seed(r.train.seed)
    tok, pairs, body, texts, rows = prepare(r, method, rep)
    body = method.apply(body, causal=False)
    encoder = retrieval_encoder(tok, body, r, None)  # evaluations see the body as it trains
    trainer = Trainer(job, method, body, texts, rows, tok.pad_token_id or 0)
    trainable = sum(p.numel() for p in body.parameters() if p.requires_grad)
    total = sum(p.numel() for p in body.parameters())
    resumed = trainer.resume()
    job.begin({"data_fingerprint": {"train": pairs_fingerprint(pairs)}, "tokenizer_hash": tokenizer_fingerprint(tok),
               "trainable_parameters": trainable, "total_parameters": total, "total_steps": len(trainer.steps),
               "data_summary": {"pairs": len(rows), "texts": len(texts.index),
                                "mined_negatives": method.config.hard_negatives}}, resumed_step=resumed)

    def evaluate(step: int) -> dict:
        scores = score_encoder(encoder, r, None, rep) if r.data.retrieval is not None else {}
        if scores:
            job.log({"step": step, **{f"eval_{k}": v for k, v in scores.items() if isinstance(v, float)}})
        return scores

    started = time.perf_counter()
    stopped = trainer.run(evaluate)
    if stopped is not None:
        return stopped
    train_seconds = time.perf_counter() - started
    final = evaluate(trainer.step)
    return Outcome(steps=trainer.step, trainable_parameters=trainable, total_parameters=total, tokenizer=tok,
                   model=TaskModel(body, "retrieval"), eval=final,
                   eval_rows=final["queries"] + final["unjudged_queries"] if final else None,
                   train_tokens=trainer.tokens, train_seconds=train_seconds if not resumed else None,
                   info={"pooling": r.model.pooling, "normalize": True},
                   manifest={"eval_seconds": final["embed_seconds"] + final["search_seconds"] if final else None})
