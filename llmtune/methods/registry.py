"""The one list of methods. A method module registers itself; nothing else names it.

Method modules import only pydantic at module level (torch, peft and trl inside their
functions), so the registry, the schema and `llmtune validate` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmtune.methods.base import Method

_METHODS: dict[str, type["Method"]] = {}


def register_method(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make `cls` selectable as `method.name: <cls.name>` in recipes."""
    name = cls.name
    if name in _METHODS:
        raise ValueError(f"method {name!r} is already registered by {_METHODS[name].__module__}")
    config_name = cls.Config.model_fields["name"].annotation
    if getattr(config_name, "__args__", None) != (name,):
        raise ValueError(f"{cls.__name__}.Config.name must be Literal[{name!r}]")
    _METHODS[name] = cls
    return cls


def all_methods() -> dict[str, type["Method"]]:
    _load_builtin_methods()
    return dict(_METHODS)


def get_method(name: str) -> type["Method"]:
    _load_builtin_methods()
    return _METHODS[name]


def _load_builtin_methods() -> None:
    # Importing the package runs each module's @register_method.
    import llmtune.methods  # noqa: F401
