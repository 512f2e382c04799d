"""Generate docs/recipe-reference.md from the schema, so the reference cannot drift.

    llmtune schema --markdown > docs/recipe-reference.md
"""

from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from llmtune.recipe import eval_section as e
from llmtune.recipe import schema as s
from llmtune.recipe.field_docs import field_docs

SECTIONS: list[tuple[str, type[BaseModel]]] = [("model", s.ModelSection), ("data", s.DataSection), ("data.train / data.eval", s.DataSource),
            ("data.columns", s.Columns), ("train", s.TrainSection), ("eval", e.EvalSection),
            ("eval.generation", e.GenerationOptions), ("output", s.OutputSection)]


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation) if a is not type(None)) + \
            (" or null" if type(None) in typing.get_args(annotation) else "")
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (list, dict):
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{origin.__name__}[{args}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default if field.default_factory is None else field.default_factory()
    if isinstance(value, BaseModel):
        return "(see below)"
    text = repr(value) if isinstance(value, str) else ("null" if value is None else str(value))
    return f"`{text}`".replace("\n", "\\n").replace("|", "\\|")


def _table(model: type[BaseModel], skip=("name",)) -> list[str]:
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    docs = field_docs(model)
    for key, field in model.model_fields.items():
        if key in skip and model.__module__.startswith("llmtune.methods"):
            continue
        doc = " ".join(docs.get(key, "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {doc} |")
    return rows


def render_reference() -> str:
    from llmtune.methods.registry import all_methods

    out = ["# Recipe reference", "",
           "Generated from the schema by `llmtune schema --markdown`; a test fails when this file is stale.",
           "Every key is checked: unknown keys are errors with a suggestion, and all errors are reported at once.",
           ""]
    for title, model in SECTIONS:
        out += [f"## `{title}`", ""] + _table(model) + [""]
    out += ["## `method`", "", "`method.name` picks the method; the other keys are that method's options.", ""]
    for name, method in sorted(all_methods().items()):
        out += [f"### `{name}`", "", method.summary + ".", ""]
        table = _table(method.Config)
        out += (table if len(table) > 2 else ["No options."]) + [""]
    return "\n".join(out).rstrip() + "\n"
