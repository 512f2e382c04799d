"""Load YAML safely and remember the line of every key, so errors can point at it."""

from __future__ import annotations

from typing import Any

import yaml

from llmtune.errors import RecipeError

KeyPath = tuple  # tuple[str | int, ...]


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse `text` with yaml.safe_load and map each key path to its 1-based line."""
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(
            f"{where}: the recipe is not valid YAML ({problem}); check indentation and quoting"
        ) from None
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _walk(node, (), lines, set(), source)
    return data, lines


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], seen: set, source: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    # An alias points at a node already walked: walking it again would loop forever on a
    # self-reference and take exponential time on nested aliases ("billion laughs").
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key, str):
                continue  # a complex key: safe_load already refused it
            if key in first_line and key_node.tag != "tag:yaml.org,2002:merge":
                # PyYAML keeps the last one silently; a recipe must not mean two things.
                raise RecipeError(f"{source}:{key_node.start_mark.line + 1}: key {key!r} appears twice in "
                                  f"the same section (first on line {first_line[key]}); keep one")
            first_line.setdefault(key, key_node.start_mark.line + 1)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines, seen, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), lines, seen, source)


def line_for(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of `path`, or of its nearest ancestor present in the file."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
