"""The in-context method's run: build the base causal LM, score the eval rows by prompting
it (evaluate/prompted.py), and hand the result to the run session as an Outcome with
nothing trained. final/ then holds the tokenizer and llmtune.json, no weights."""

from __future__ import annotations

import time
from pathlib import Path

from llmtune.methods.job import Job, Outcome


def prompt_in_context(job: Job) -> Outcome:
    import torch

    from llmtune.data.cache import tokenizer_fingerprint
    from llmtune.device import default_device
    from llmtune.evaluate.prompted import evaluate_prompted
    from llmtune.evaluate.prompted_model import as_causal, refuse_an_encoder, refuse_an_encoder_name
    from llmtune.models.build import build_task_model
    from llmtune.models.chat_template import template_hash
    from llmtune.models.load import load_tokenizer

    r = job.recipe
    refuse_an_encoder_name(r)
    tok = load_tokenizer(r.model.name, r.model.trust_remote_code, r.model.revision)
    torch.manual_seed(r.train.seed)
    model = build_task_model(as_causal(r), None)
    refuse_an_encoder(r, model.body)
    total = sum(p.numel() for p in model.parameters())
    job.begin({"trainable_parameters": 0, "total_parameters": total, "total_steps": 0,
               "tokenizer_hash": tokenizer_fingerprint(tok), "chat_template_hash": template_hash(tok)})
    device = default_device()
    model.to(device).eval()
    started = time.perf_counter()
    with torch.inference_mode():
        result = evaluate_prompted(model.body, tok, r, r.eval.limit, job.reporter, device, job.store_demos)
    seconds = time.perf_counter() - started
    return Outcome(steps=0, trainable_parameters=0, total_parameters=total, tokenizer=tok, save=_nothing_trained,
                   eval=result, train_seconds=0.0, train_tokens=0,
                   manifest={"eval_seconds": result.get("prompt_seconds", seconds), "prompting": result.get("prompting")})


def _nothing_trained(folder: Path) -> None:
    """final/ gets the tokenizer and llmtune.json from the session; there are no weights."""
