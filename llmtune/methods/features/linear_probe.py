"""Linear probe: the feature-based approach. The encoder stays frozen; its pooled features
of the training texts are computed once (and cached on disk), and a multinomial logistic
regression is fitted on them.

The result is an ordinary llmtune classifier: a TaskModel whose body is the untouched base
model and whose head is the fitted linear layer. So final/ holds only head.safetensors, the
tokenizer and llmtune.json (naming the encoder by `base_model`), never a copy of the
encoder, and `llmtune eval RUN_DIR` scores it through the same path as every other
classification run.

The regression is a full-batch L-BFGS on standardised features in torch (no new
dependency: scikit-learn is not one of llmtune's). The problem is small and convex (a few
thousand rows x a few hundred features), so L-BFGS reaches the optimum in well under a
second; standardising makes it well conditioned, and the scaling is folded back into the
saved weights, so the head reads the raw pooled features.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from llmtune.device import default_device
from llmtune.methods.base import Method, MethodConfig, freeze
from llmtune.methods.job import Outcome
from llmtune.methods.registry import register_method


class LinearProbeConfig(MethodConfig):
    name: Literal["linear-probe"]
    l2: float = Field(0.1, ge=0)
    """L2 penalty on the weights (not the bias), added to the mean cross-entropy and
    measured on standardised features. Larger values give a smoother classifier; raise it
    when there are few training rows."""
    max_iter: int = Field(500, gt=0)
    """Most L-BFGS iterations; the fit stops earlier once the loss stops changing."""


@register_method
class LinearProbe(Method):
    name = "linear-probe"
    Config = LinearProbeConfig
    summary = "frozen encoder, logistic regression on its pooled features (embedded once, cached)"
    tasks = frozenset({"classification"})
    can_merge = True  # nothing to fold in: the body is the untouched base encoder
    trains_itself = True

    def merge(self, body):
        return body

    def apply(self, body, *, causal: bool):
        freeze(body)
        return body

    # save/load: nothing of the body trained; the run saves and loads the head.

    def fit(self, job) -> Outcome:
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
        model.body = self.apply(model.body, causal=False)
        model.to(default_device()).eval()
        has_bias = model.head.bias is not None  # no bias on decoders with pooling last (models/stock_head.py)
        trainable, total = sum(p.numel() for p in model.head.parameters()), _count(model)
        job.begin({"data_fingerprint": data.fingerprint, "data_summary": data.summary,
                   "tokenizer_hash": tokenizer_fingerprint(tok), "trainable_parameters": trainable,
                   "total_parameters": total, "precision": _probe_precision(r.model.dtype)})

        t0 = time.perf_counter()
        feats, hits = self._features(r, model, tok, data)
        embed_seconds = time.perf_counter() - t0
        origin = ", ".join(f"{split} {'from the cache' if hit else 'embedded'}" for split, hit in hits.items())
        rep.log(f"features: {feats['train'].shape[0]} train rows x {feats['train'].shape[1]} ({origin}; "
                f"{embed_seconds:.1f} s)")

        t1 = time.perf_counter()
        y = torch.tensor([e["label"] for e in data.train])
        weight, bias, fit_info = fit_logistic_regression(torch.from_numpy(feats["train"]), y, len(data.labels),
                                                         self.config.l2, self.config.max_iter, fit_bias=has_bias)
        fit_seconds = time.perf_counter() - t1
        with torch.no_grad():
            model.head.weight.copy_(weight.to(model.head.weight))
            if has_bias:
                model.head.bias.copy_(bias.to(model.head.bias))
        steps = fit_info["iterations"]
        train_acc = _accuracy(weight, bias, torch.from_numpy(feats["train"]), y)
        job.log({"step": steps, "loss": fit_info["loss"], "train_accuracy": train_acc})
        rep.log(f"logistic regression: {steps} L-BFGS iterations, loss {fit_info['loss']:.4f}, "
                f"train accuracy {train_acc:.4f} ({fit_seconds:.2f} s)")
        t2 = time.perf_counter()
        final_eval = _score(weight, bias, feats["eval"], data.eval, data.labels) if data.eval else {}
        # Per-query cost: the eval rows' share of the embedding time plus the scoring.
        eval_seconds = embed_seconds * len(data.eval) / max(len(data.train) + len(data.eval), 1) + \
            time.perf_counter() - t2
        if final_eval:
            job.log({"step": steps, **{f"eval_{k}": v for k, v in final_eval.items() if isinstance(v, (int, float))}})
            rep.log(f"eval: accuracy {final_eval['accuracy']:.4f}, macro-F1 {final_eval['macro_f1']:.4f}")
        m = r.model
        return Outcome(
            steps=steps, trainable_parameters=trainable, total_parameters=total, tokenizer=tok, model=model,
            eval=final_eval, eval_rows=len(data.eval), train_tokens=sum(len(e["input_ids"]) for e in data.train),
            info={"labels": data.labels, "encoder": {"name": m.name, "revision": m.revision, "dtype": m.dtype,
                              "note": "not copied: final/ holds only the head; the encoder loads from name"}},
            manifest={"train_accuracy": train_acc, "eval_seconds": eval_seconds if final_eval else None,
                      "features": {"cached": hits, "embed_seconds": embed_seconds, "fit_seconds": fit_seconds,
                                   "converged": fit_info["converged"]}})

    def _features(self, r, model, tok, data):
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
            out[split], hits[split] = cached_features(key, len(ids), lambda ids=ids: encoder.embed_ids(ids).numpy())
        return out, hits


def _probe_precision(model_dtype: str) -> dict:
    """The encoder runs (frozen) in the policy's weights dtype; the probe is fit in float64."""
    from llmtune.models.precision import precision_record

    record = precision_record(model_dtype, "fp32")
    return {**record, "trainable_dtype": "float64", "policy": f"{record['weights_dtype']} frozen features, "
                                                              f"float64 probe"}


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


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
