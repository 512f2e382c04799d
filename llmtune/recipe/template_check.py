"""`eval.templates` checked at validate time: a template must parse, and must not do what the
evaluation's sandbox refuses when it renders (reading Python internals such as `__class__`,
a `range` too large), so `validate` says so instead of an evaluation failing later.

Only parsing happens here; no template is ever run while a recipe is read."""

from __future__ import annotations

from typing import Any


def check_template(source: str) -> str:
    """The template unchanged, or ValueError naming what the sandbox would refuse."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment

    try:
        tree = SandboxedEnvironment().parse(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"not a valid Jinja template (template line {exc.lineno}: {exc.message})") from None
    refused = _refused_by_the_sandbox(tree)
    if refused:
        raise ValueError(f"the evaluation renders templates in a sandbox, which refuses {refused}")
    return source


def _refused_by_the_sandbox(tree: Any) -> str | None:
    """What in `tree` the sandbox refuses whatever the row holds, or None."""
    from jinja2 import nodes
    from jinja2.sandbox import MAX_RANGE

    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Call)):
        name = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args \
                and isinstance(node.args[0], nodes.Const):
            name = node.args[0].value
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "range":
            sizes = [a.value for a in node.args if isinstance(a, nodes.Const) and isinstance(a.value, int)]
            if any(abs(size) > MAX_RANGE for size in sizes):
                return f"a range of more than {MAX_RANGE:,} items (template line {node.lineno})"
        if isinstance(name, str) and _unsafe_attribute(name):
            return (f"the attribute {name!r} (template line {node.lineno}); a template reads the row's fields "
                    f"(`{{{{ text }}}}`, your column names), not Python internals")
    return None


def _unsafe_attribute(name: str) -> bool:
    from jinja2 import sandbox

    internal = (sandbox.UNSAFE_FUNCTION_ATTRIBUTES | sandbox.UNSAFE_METHOD_ATTRIBUTES
                | sandbox.UNSAFE_GENERATOR_ATTRIBUTES | sandbox.UNSAFE_COROUTINE_ATTRIBUTES
                | sandbox.UNSAFE_ASYNC_GENERATOR_ATTRIBUTES | {"mro"})
    return name.startswith("_") or name in internal
