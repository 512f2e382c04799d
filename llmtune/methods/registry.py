"""The one list of methods, filled by discovery: every public module of a family package
under llmtune/methods/ is imported and registers its method with @register_method.
Adding a method is one file in its family's folder (and its test); nothing else names it.

Modules whose name starts with `_` are a family's internals (its torch half, the trl
glue) and are imported lazily by the methods that use them. Public method modules import
only pydantic at module level, so discovery, the schema and `llmtune validate` stay fast
and never import torch (tests/test_layering.py checks).

A method's module is named after it (`frozen-head` in `frozen_head.py`), so looking up one
method imports one module instead of all of them: `llmtune validate` and `train` read one
recipe, one method. Full discovery stays the answer to "which methods exist" and the
fallback when no module carries the name (tests/test_layering.py holds every method to it).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmtune.methods.base import Method, MethodConfig

_METHODS: dict[str, type["Method"]] = {}
_discovered = False


def register_method(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make `cls` selectable as `method.name: <cls.name>` in recipes."""
    name = cls.name
    if name in _METHODS and _METHODS[name] is not cls:
        raise ValueError(f"method {name!r} is already registered by {_METHODS[name].__module__}")
    config_name = cls.Config.model_fields["name"].annotation
    if getattr(config_name, "__args__", None) != (name,):
        raise ValueError(f"{cls.__name__}.Config.name must be Literal[{name!r}]")
    _METHODS[name] = cls
    return cls


def all_methods() -> dict[str, type["Method"]]:
    _discover()
    return dict(_METHODS)


def get_method(name: str) -> type["Method"]:
    """The method registered as `name` (KeyError if none is)."""
    return _METHODS.get(name) or find_method(name) or _discovered_method(name)


def find_method(name: str) -> type["Method"] | None:
    """The method `name` if a module named after it registers it, importing only that module;
    None otherwise (an unknown name, or a method whose module breaks the naming rule)."""
    if not isinstance(name, str) or not name.replace("-", "_").isidentifier():
        return None
    if name in _METHODS:
        return _METHODS[name]
    import llmtune.methods as root

    stem = name.replace("-", "_")
    for base in root.__path__:
        for candidate in sorted(Path(base).glob(f"[!_]*/{stem}.py")):
            importlib.import_module(f"{root.__name__}.{candidate.parent.name}.{stem}")
    return _METHODS.get(name)


def _discovered_method(name: str) -> type["Method"]:
    _discover()
    return _METHODS[name]


def method_for(config: "MethodConfig") -> "Method":
    """The method a recipe's `method` section selects, built with those options."""
    return get_method(config.name)(config)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import llmtune.methods as root

    for family in pkgutil.iter_modules(root.__path__, root.__name__ + "."):
        if not family.ispkg:
            continue
        package = importlib.import_module(family.name)
        for module in pkgutil.iter_modules(package.__path__, family.name + "."):
            if not module.name.rsplit(".", 1)[1].startswith("_"):
                importlib.import_module(module.name)
    _discovered = True
