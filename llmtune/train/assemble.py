"""The model a run trains, and the model a finished run's final/ holds: a body from the
recipe's model, the method applied to the body, and the task head, which the run (not the
method) makes trainable, saves and loads."""

from __future__ import annotations

from pathlib import Path

from llmtune.models.build import build_task_model
from llmtune.models.precision import keep_all_in, keep_trainable_in


def prepare_for_training(model, method) -> None:
    """Apply `method` to the TaskModel's body; the classification head always trains."""
    model.body = method.apply(model.body, causal=model.is_causal)
    if model.head is not None:
        model.head.requires_grad_(True)


def build_for_training(recipe, method, labels: list[str] | None, tok=None, reporter=None):
    model = build_task_model(recipe, labels)
    if model.head is not None and labels is not None and recipe.model.head_init == "label_words":
        _head_from_label_words(model, recipe, labels, tok, reporter)
    prepare_for_training(model, method)
    keep_trainable_in(model, recipe.model.dtype)  # the precision the manifest records
    return model


def save_trained(model, method, folder: Path) -> None:
    """What trained: the method's part of the body, and the head."""
    method.save(model.body, folder)
    model.save_head(folder)


def load_into(model, method, folder: Path) -> None:
    """Put what `save_trained` wrote back onto a freshly built TaskModel."""
    model.body = method.load(model.body, folder, causal=model.is_causal)
    model.load_head(folder)


def load_trained(recipe, method, final: Path, labels: list[str] | None):
    """The TaskModel a run's final/ holds: its base body (or the whole body final/ saved),
    what the method saved, and the head."""
    source = method.body_source(recipe.model.name, final)
    model = build_task_model(recipe, labels, body_source=None if source == recipe.model.name else source)
    load_into(model, method, final)
    keep_all_in(model, recipe.model.dtype)
    return model


def _head_from_label_words(model, recipe, labels: list[str], tok, reporter) -> None:
    from llmtune.errors import UserError
    from llmtune.models.load import load_tokenizer, output_embedding_rows
    from llmtune.models.task_model import init_head_from_words

    m = recipe.model
    words = [(recipe.eval.verbalizers or {}).get(label, label) for label in labels]
    tok = tok or load_tokenizer(m.name, m.trust_remote_code, m.revision)
    try:
        ids = init_head_from_words(model, tok, words,
                                   lambda ids: output_embedding_rows(m.name, model.body, ids, m.revision))
    except ValueError as exc:
        raise UserError(f"model.head_init label_words: {exc}") from None
    if reporter is not None:
        reporter.log("head starts from the output embeddings of " +
                     ", ".join(f"{w!r} (token {tok.decode([i])!r})" for w, i in zip(words, ids)))
