"""The linear probe's torch half: embed the examples once (cached), fit the logistic regression
in closed form, put it in the head and score the eval rows. linear_probe.py says what the
method is; the run saves the head like any classifier's."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from llmtune.device import default_device
from llmtune.methods.job import Job, Outcome

if TYPE_CHECKING:
    from llmtune.methods.base import Method
    from llmtune.methods.features.linear_probe import LinearProbeConfig


def fit_probe(job: Job, method: Method, config: LinearProbeConfig) -> Outcome:
    import torch

    from llmtune.data.cache import tokenizer_fingerprint
    from llmtune.data.pipeline import prepare_data
    from llmtune.models.build import build_task_model
    from llmtune.models.load import load_tokenizer

    r, rep = job.recipe, job.reporter
    tok = load_tokenizer(r.model.name, r.model.trust_remote_code, r.model.revision)
    data = prepare_data(r.data, tok)
    if r.eval.limit:  # score the rows every other method's final evaluation scores
        data.eval = data.eval[: r.eval.limit]
    rep.log(f"data: {len(data.train)} train / {len(data.eval)} eval examples")
    torch.manual_seed(r.train.seed)
    model = build_task_model(r, data.labels)
    model.body = method.apply(model.body, causal=False)
    model.to(default_device()).eval()
    assert model.head is not None  # a classification model: build_task_model gives it its head
    trainable, total = sum(p.numel() for p in model.head.parameters()), sum(p.numel() for p in model.parameters())
    job.begin({"data_fingerprint": data.fingerprint, "data_summary": data.summary,
               "tokenizer_hash": tokenizer_fingerprint(tok), "trainable_parameters": trainable,
               "total_parameters": total, "precision": _probe_precision(r.model.dtype)})
    t0 = time.perf_counter()
    feats, hits = _features(r, model, tok, data)
    embed_seconds = time.perf_counter() - t0
    origin = ", ".join(f"{split} {'from the cache' if hit else 'embedded'}" for split, hit in hits.items())
    rep.log(f"features: {feats['train'].shape[0]} train rows x {feats['train'].shape[1]} ({origin}; "
            f"{embed_seconds:.1f} s)")
    fitted = _fit_head(job, model, feats["train"], data, config)
    t2 = time.perf_counter()
    final_eval = _score(fitted["weight"], fitted["bias"], feats["eval"], data.eval, data.labels) if data.eval else {}
    # Per-query cost: the eval rows' share of the embedding time plus the scoring.
    eval_seconds = embed_seconds * len(data.eval) / max(len(data.train) + len(data.eval), 1) + \
        time.perf_counter() - t2
    if final_eval:
        job.log({"step": fitted["steps"], **{f"eval_{k}": v for k, v in final_eval.items()
                                              if isinstance(v, (int, float))}})
        rep.log(f"eval: accuracy {final_eval['accuracy']:.4f}, macro-F1 {final_eval['macro_f1']:.4f}")
    m = r.model
    return Outcome(
        steps=fitted["steps"], trainable_parameters=trainable, total_parameters=total, tokenizer=tok, model=model,
        eval=final_eval, eval_rows=len(data.eval), train_tokens=sum(len(e["input_ids"]) for e in data.train),
        info={"labels": data.labels, "encoder": {"name": m.name, "revision": m.revision, "dtype": m.dtype,
                                                 "note": "not copied: final/ holds only the head; the encoder "
                                                         "loads from name"}},
        manifest={"train_accuracy": fitted["train_accuracy"], "eval_seconds": eval_seconds if final_eval else None,
                  "features": {"cached": hits, "embed_seconds": embed_seconds,
                               "fit_seconds": fitted["seconds"], "converged": fitted["converged"]}})


def _fit_head(job: Job, model: Any, train_features: Any, data: Any, config: LinearProbeConfig) -> dict:
    """Fit the regression on the training features and copy it into the model's head."""
    import torch

    started = time.perf_counter()
    has_bias = model.head.bias is not None  # no bias on decoders with pooling last (models/stock_head.py)
    x, y = torch.from_numpy(train_features), torch.tensor([e["label"] for e in data.train])
    weight, bias, info = fit_logistic_regression(x, y, len(data.labels), config.l2, config.max_iter,
                                                 fit_bias=has_bias)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        model.head.weight.copy_(weight.to(model.head.weight))
        if has_bias:
            model.head.bias.copy_(bias.to(model.head.bias))
    steps, train_acc = info["iterations"], _accuracy(weight, bias, x, y)
    job.log({"step": steps, "loss": info["loss"], "train_accuracy": train_acc})
    job.reporter.log(f"logistic regression: {steps} L-BFGS iterations, loss {info['loss']:.4f}, "
                     f"train accuracy {train_acc:.4f} ({seconds:.2f} s)")
    return {"weight": weight, "bias": bias, "steps": steps, "train_accuracy": train_acc, "seconds": seconds,
            "converged": info["converged"]}


def _features(r: Any, model: Any, tok: Any, data: Any) -> tuple[dict, dict]:
    """Pooled features of the train and eval examples, from the cache when it has them."""
    from llmtune.models.encoder import Encoder
    from llmtune.models.feature_cache import cached_features, features_key, model_fingerprint, token_ids_digest

    # precision=None: embed with the body exactly as `llmtune eval` will run it.
    encoder = Encoder(tok, model.body, pooling=r.model.pooling, max_length=r.data.max_length,
                      truncation_side=r.data.truncation_side, batch_size=r.eval.batch_size, precision=None)
    fingerprint = model_fingerprint(r.model.name, r.model.revision, r.model.dtype)
    out, hits = {}, {}
    for split, examples in (("train", data.train), ("eval", data.eval)):
        ids = [e["input_ids"] for e in examples]
        key = features_key(model=fingerprint, pooling=r.model.pooling, token_ids=token_ids_digest(ids))
        out[split], hits[split] = cached_features(key, len(ids), functools.partial(_embed, encoder, ids))
    return out, hits


def _embed(encoder: Any, ids: list[list[int]]) -> Any:
    return encoder.embed_ids(ids).numpy()


def _probe_precision(model_dtype: str) -> dict:
    """The encoder runs (frozen) in the policy's weights dtype; the probe is fit in float64."""
    from llmtune.models.precision import precision_record

    record = precision_record(model_dtype, "fp32")
    return {**record, "trainable_dtype": "float64", "policy": f"{record['weights_dtype']} frozen features, "
                                                              f"float64 probe"}


def fit_logistic_regression(features, labels, num_classes: int, l2: float, max_iter: int, fit_bias: bool = True):
    """Multinomial logistic regression, full-batch L-BFGS in float64.

    Minimises mean cross-entropy + l2/2 * |W|^2 on standardised features, then folds the
    standardisation into the weights. Returns (weight (k, d), bias (k,), info) in float32
    for the raw features. With `fit_bias=False` the features are scaled but not centred and the
    bias stays zero (the head of a decoder with pooling last has none)."""
    import torch
    from torch.nn import functional as F

    x = features.double()
    mean = x.mean(dim=0) if fit_bias else torch.zeros(x.shape[1], dtype=torch.float64)
    scale = x.std(dim=0).clamp_min(1e-8)
    z = (x - mean) / scale
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=fit_bias)
    opt = torch.optim.LBFGS([weight, bias] if fit_bias else [weight], lr=1.0, max_iter=max_iter,
                            history_size=20, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective():
        return F.cross_entropy(z @ weight.T + bias, labels) + 0.5 * l2 * weight.pow(2).sum()

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    iterations = int(opt.state[weight].get("n_iter", 0))
    with torch.no_grad():
        loss = float(objective())
        raw_weight = weight / scale
        raw_bias = bias - raw_weight @ mean
    info = {"loss": loss, "iterations": iterations, "converged": iterations < max_iter}
    return raw_weight.float(), raw_bias.float(), info


def _accuracy(weight, bias, features, labels) -> float:
    preds = (features @ weight.T + bias).argmax(-1)
    return float((preds == labels).double().mean())


def _score(weight, bias, features, examples, labels) -> dict:
    import torch

    from llmtune.evaluate.metrics import classification_metrics

    preds = (torch.from_numpy(features) @ weight.T + bias).argmax(-1).tolist()
    return classification_metrics(preds, [e["label"] for e in examples], labels)
