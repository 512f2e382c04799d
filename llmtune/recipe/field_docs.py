"""Field documentation read from the attribute docstrings of the schema classes.

The docstring under each field is its documentation (schema.py). pydantic can attach these
itself (`use_attribute_docstrings`), but it does so by finding and parsing each class's
source while the class is created, which was a third of `llmtune validate`'s run time. They
are only needed by `llmtune schema`, so they are read here, on demand, the same way: the
string statement right after an annotated assignment in the class body.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
import typing

from pydantic import BaseModel


@functools.lru_cache(maxsize=None)
def _own_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (frozen or built in a string): no docs
        return {}
    node = ast.parse(source).body[0]
    if not isinstance(node, ast.ClassDef):
        return {}
    body = node.body
    docs = {}
    for stmt, after in zip(body, body[1:]):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def field_docs(model: type[BaseModel]) -> dict[str, str]:
    """{field name: its docstring} for `model`, inherited fields included (nearest class wins)."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            docs.update(_own_docs(cls))
    return docs


def models_in(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every schema class reachable from `model` through its fields, by class name (the titles
    of the JSON Schema's definitions)."""
    found: dict[str, type[BaseModel]] = {}

    def visit(annotation) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ not in found:
                found[annotation.__name__] = annotation
                for field in annotation.model_fields.values():
                    visit(field.annotation)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(model)
    return found


def describe_json_schema(schema: dict, model: type[BaseModel]) -> dict:
    """`model`'s JSON Schema with each property's docstring as its `description`."""
    classes = models_in(model)
    for definition in [schema, *schema.get("$defs", {}).values()]:
        cls = classes.get(definition.get("title", ""))
        if cls is None:
            continue
        docs = field_docs(cls)
        for key, prop in definition.get("properties", {}).items():
            if key in docs:
                prop.setdefault("description", docs[key])
    return schema
