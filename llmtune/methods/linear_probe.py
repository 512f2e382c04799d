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

from llmtune.methods.base import Method, MethodConfig
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

    def merge(self, model):
        return model.body

    def apply(self, model) -> None:
        for p in model.body.parameters():
            p.requires_grad_(False)
        for p in model.head.parameters():
            p.requires_grad_(True)

    # save/load: the base class writes and reads only the head, which is all that trained.

    def fit(self, ctx) -> dict:
        import torch

        from llmtune.data.pipeline import prepare_data
        from llmtune.evaluate.supervised import headline
        from llmtune.models.build import build_task_model
        from llmtune.models.load import load_tokenizer

        r, rep, run = ctx.recipe, ctx.reporter, ctx.run
        start = time.perf_counter()
        tok = load_tokenizer(r.model.name, r.model.trust_remote_code, r.model.revision)
        data = prepare_data(r.data, tok, ctx.base_dir)
        if r.eval.limit:  # score the rows every other method's final evaluation scores
            data.eval = data.eval[: r.eval.limit]
        rep.log(f"data: {len(data.train)} train / {len(data.eval)} eval examples")
        torch.manual_seed(r.train.seed)
        model = build_task_model(r, data.labels)
        self.apply(model)
        model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu")).eval()

        t0 = time.perf_counter()
        feats, hits = self._features(ctx, model, tok, data)
        embed_seconds = time.perf_counter() - t0
        origin = ", ".join(f"{split} {'from the cache' if hit else 'embedded'}" for split, hit in hits.items())
        rep.log(f"features: {feats['train'].shape[0]} train rows x {feats['train'].shape[1]} ({origin}; "
                f"{embed_seconds:.1f} s)")

        t1 = time.perf_counter()
        y = torch.tensor([e["label"] for e in data.train])
        weight, bias, fit_info = fit_logistic_regression(torch.from_numpy(feats["train"]), y, len(data.labels),
                                                         self.config.l2, self.config.max_iter)
        fit_seconds = time.perf_counter() - t1
        with torch.no_grad():
            model.head.weight.copy_(weight.to(model.head.weight))
            model.head.bias.copy_(bias.to(model.head.bias))
        steps = fit_info["iterations"]
        train_acc = _accuracy(weight, bias, torch.from_numpy(feats["train"]), y)
        run.log_metrics({"step": steps, "loss": fit_info["loss"], "train_accuracy": train_acc})
        rep.log(f"logistic regression: {steps} L-BFGS iterations, loss {fit_info['loss']:.4f}, "
                f"train accuracy {train_acc:.4f} ({fit_seconds:.2f} s)")
        final_eval = {}
        if data.eval:
            final_eval = _score(weight, bias, feats["eval"], data.eval, data.labels)
            run.log_metrics({"step": steps, **{f"eval_{k}": v for k, v in headline(final_eval).items()}})
            rep.log(f"eval: accuracy {final_eval['accuracy']:.4f}, macro-F1 {final_eval['macro_f1']:.4f}")

        self._save_final(run, model, tok, r, data.labels)
        trainable, total = model.trainable_parameters()
        train_seconds = time.perf_counter() - start
        self._write_manifest(ctx, data, tok, {
            "trainable_parameters": trainable, "total_parameters": total,
            "trainable_percent": 100 * trainable / total, "steps": steps, "train_seconds": train_seconds,
            "features": {"cached": hits, "embed_seconds": embed_seconds, "fit_seconds": fit_seconds,
                         "converged": fit_info["converged"]},
            "final_eval": headline(final_eval),
        })
        return {"steps": steps, "train_seconds": train_seconds, "trainable_parameters": trainable,
                "total_parameters": total, "train_accuracy": train_acc, "eval": final_eval,
                "run_dir": str(run.path)}

    def _features(self, ctx, model, tok, data):
        """Pooled features of the train and eval examples, from the cache when it has them."""
        from llmtune.embed.encoder import Encoder
        from llmtune.embed.feature_cache import cached_features, features_key, model_fingerprint, token_ids_digest

        r = ctx.recipe
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

    def _save_final(self, run, model, tok, recipe, labels) -> None:
        from llmtune.models.task_model import write_info
        from llmtune.train.run_dir import write_final

        m = recipe.model

        def fill(folder):
            self.save(model, folder)
            tok.save_pretrained(folder)
            write_info(folder, {"task": recipe.data.task, "method": self.name, "base_model": m.name,
                                "encoder": {"name": m.name, "revision": m.revision, "dtype": m.dtype,
                                            "note": "not copied: final/ holds only the head; the encoder "
                                                    "loads from name"},
                                "pooling": m.pooling, "max_length": recipe.data.max_length, "labels": labels})

        write_final(run, fill)

    def _write_manifest(self, ctx, data, tok, extra: dict) -> None:
        from llmtune.data.cache import tokenizer_fingerprint
        from llmtune.train.run_dir import build_manifest, write_manifest

        r = ctx.recipe
        write_manifest(ctx.run, build_manifest(ctx.loaded.path, r.train.seed, {
            "method": self.name, "task": r.data.task, "model": r.model.name,
            "data_fingerprint": data.fingerprint, "data_summary": data.summary,
            "tokenizer_hash": tokenizer_fingerprint(tok), **ctx.manifest_extra, **extra,
        }))


def fit_logistic_regression(features, labels, num_classes: int, l2: float, max_iter: int):
    """Multinomial logistic regression, full-batch L-BFGS in float64.

    Minimises mean cross-entropy + l2/2 * |W|^2 on standardised features, then folds the
    standardisation into the weights. Returns (weight (k, d), bias (k,), info) in float32
    for the raw features."""
    import torch
    from torch.nn import functional as F

    x = features.double()
    mean = x.mean(dim=0)
    scale = x.std(dim=0).clamp_min(1e-8)
    z = (x - mean) / scale
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

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
