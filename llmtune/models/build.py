"""Assemble the TaskModel a recipe asks for."""

from __future__ import annotations

from llmtune.models.load import load_body
from llmtune.models.task_model import TaskModel


def build_task_model(recipe, labels: list[str] | None, body_source: str | None = None) -> TaskModel:
    m = recipe.model
    task = recipe.data.task
    body = load_body(m.name, task, trust_remote_code=m.trust_remote_code, revision=m.revision,
                     dtype=m.dtype, source=body_source)
    if task == "classification":
        return TaskModel(body, task, num_labels=len(labels), pooling=m.pooling, head_dropout=m.head_dropout)
    return TaskModel(body, task)
