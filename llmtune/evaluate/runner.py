"""`llmtune eval`: load a trained run (or a recipe's base model) and score its eval split."""

from __future__ import annotations

import json
import os
from pathlib import Path

from llmtune.errors import UserError
from llmtune.recipe.load import LoadedRecipe, load_recipe


def load_target(target: Path, overrides: list[str]) -> tuple[LoadedRecipe, Path | None]:
    """A run directory (trained weights in final/) or a recipe file (the untrained base)."""
    target = Path(target)
    if target.is_dir():
        recipe_file = target / "recipe.yaml"
        if not recipe_file.exists():
            raise UserError(f"{target}: not a run directory (no recipe.yaml); pass a run directory or a recipe")
        final = target / "final"
        if not final.exists():
            raise UserError(f"{target}: the run has no final/ model yet; finish it with "
                            f"`llmtune train <recipe> --resume`")
        return load_recipe(recipe_file, overrides), final
    if target.is_file():
        return load_recipe(target, overrides), None
    raise UserError(f"{target}: no such run directory or recipe file")


def load_trained(loaded: LoadedRecipe, final: Path | None):
    """(TaskModel with trained weights, tokenizer, labels)."""
    from llmtune.methods.registry import get_method
    from llmtune.models.build import build_task_model
    from llmtune.models.load import load_tokenizer

    r = loaded.recipe
    method = get_method(r.method.name)(r.method)
    labels = None
    if final is not None:
        info = json.loads((final / "llmtune.json").read_text())
        labels = info.get("labels")
        tok = load_tokenizer(str(final))
        body_source = method.body_source(r.model.name, final)
        model = build_task_model(r, labels, body_source=None if body_source == r.model.name else body_source)
        method.load(model, final)
    else:
        tok = load_tokenizer(r.model.name, r.model.trust_remote_code, r.model.revision)
        model = None
    return method, model, tok, labels


def evaluate_target(target: Path, overrides: list[str], limit: int | None, reporter) -> dict:
    import torch

    from llmtune.data.pipeline import prepare_data
    from llmtune.evaluate.supervised import evaluate_examples
    from llmtune.models.build import build_task_model

    from llmtune.methods.registry import get_method

    loaded, final = load_target(target, overrides)
    r = loaded.recipe
    custom = get_method(r.method.name)(r.method).evaluate(loaded, final, limit, reporter)
    if custom is not None:
        return _write_eval(final, {"target": str(target), "task": r.data.task, "method": r.method.name, **custom})
    _, model, tok, labels = load_trained(loaded, final)
    data = prepare_data(r.data, tok, loaded.base_dir)
    if labels is None:
        labels = data.labels
    if model is None:
        torch.manual_seed(r.train.seed)
        model = build_task_model(r, labels)  # the untrained base: a baseline (random head)
    examples = data.eval or data.train
    limit = limit or r.eval.limit
    if limit:
        examples = examples[:limit]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    metrics = evaluate_examples(model, examples, batch_size=r.eval.batch_size, pad_id=tok.pad_token_id,
                                labels=labels, device=device)
    result = {"target": str(target), "task": r.data.task, "method": r.method.name,
              "split": "eval" if data.eval else "train", **metrics}
    return _write_eval(final, result)


def _write_eval(final: Path | None, result: dict) -> dict:
    """A run's eval.json sits beside final/ (written atomically)."""
    if final is not None:
        out = final.parent / "eval.json"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
        os.replace(tmp, out)
    return result
