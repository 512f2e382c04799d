"""The base of every options model a user writes (recipe sections, method options): unknown
keys are errors, NaN/inf are refused, and a boolean is never taken for a number.

Pydantic's lax mode reads `true` as 1 for an integer or float field, so `method.r: true`
would silently train rank 1; YAML makes that easy to write by mistake (`r: yes`)."""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # A model validator, not a field validator on "*": a field validator on `name` would
    # break the discriminated union of method options, which dispatches on that field.
    @model_validator(mode="wrap")
    @classmethod
    def _no_boolean_for_a_number(cls, data: Any, handler: Any) -> Any:
        refused = _booleans_for_numbers(cls, data)
        if not refused:
            return handler(data)
        errors = list(refused)
        try:
            handler(data)  # the fields' other problems too: every error at once
        except ValidationError as exc:
            taken = {e["loc"] for e in refused}
            errors += [InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"], ctx=e.get("ctx", {}))
                       for e in exc.errors(include_url=False) if e["loc"] not in taken]
        raise ValidationError.from_exception_data(cls.__name__, errors)


def _booleans_for_numbers(cls: type[BaseModel], data: Any) -> list[InitErrorDetails]:
    if not isinstance(data, dict):
        return []
    found = []
    for name, value in data.items():
        info = cls.model_fields.get(name) if isinstance(name, str) else None
        if isinstance(value, bool) and info is not None and _takes_a_number_not_a_boolean(info.annotation):
            noun = "a number" if float in _kinds(info.annotation) else "an integer"
            error = PydanticCustomError(
                "bool_for_number", "expected {noun}, got the boolean {value} (YAML reads true/false/yes/no/on/off "
                "as booleans); write the number", {"noun": noun, "value": str(value).lower()})
            found.append(InitErrorDetails(type=error, loc=(name,), input=value))
    return found


def _takes_a_number_not_a_boolean(annotation: Any) -> bool:
    kinds = _kinds(annotation)
    return bool(kinds & {int, float}) and not kinds & {bool, Any}


def _kinds(annotation: Any) -> set[Any]:
    """The plain types a field admits: unions, Optional and Annotated unwrapped, a Literal's
    values by their types."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kinds(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return set().union(*(_kinds(arg) for arg in get_args(annotation)))
    if origin is Literal:
        return {type(v) for v in get_args(annotation)}
    return {annotation}
