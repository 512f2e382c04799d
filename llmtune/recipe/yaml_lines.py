"""Load YAML safely and remember the line of every key, so errors can point at it.

A recipe is hostile input as far as the parser is concerned: whatever PyYAML or Python's
number conversion can raise on it (recursion on deep nesting, the int conversion limit,
memory) is turned into a RecipeError with the file and line, never a traceback.
"""

from __future__ import annotations

from typing import Any

import yaml

from llmtune.errors import RecipeError

KeyPath = tuple  # tuple[str | int, ...]

MAX_DEPTH = 32
"""Deepest nesting a recipe may have (aliases included). Real recipes stay under 6 levels;
PyYAML composes and constructs recursively, so unbounded nesting would overflow the stack."""
MAX_INT = 2**64 - 1
"""Largest integer magnitude a recipe may hold: every integer setting (steps, sizes, seeds)
fits in 64 bits, and Python refuses to read decimal integers over 4300 digits anyway."""
_MAX_INT_CHARS = 100  # longer integer literals are refused before any conversion is tried

_INT_TAG = "tag:yaml.org,2002:int"
_INTS = yaml.constructor.SafeConstructor()  # its construct_yaml_int reads every YAML 1.1 int form


class _TooDeep(Exception):
    def __init__(self, mark):
        self.mark = mark


class _Refused(Exception):
    """A recipe value refused while parsing: its line, key path (if any) and why."""

    def __init__(self, line: int, path: KeyPath, reason: str):
        self.line, self.path, self.reason = line, path, reason
        super().__init__(reason)


class _DepthBoundLoader(yaml.SafeLoader):
    """SafeLoader that refuses to compose deeper than MAX_DEPTH (PyYAML's composer recurses
    once per level, so the check must happen while composing, not after)."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse `text` with PyYAML's safe loader and map each key path to its 1-based line."""
    try:
        return _load(text)
    except _Refused as exc:
        key = f" {'.'.join(map(str, exc.path))}" if exc.path else ""
        raise RecipeError(f"{source}:{exc.line}{key}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(
            f"{where}: the recipe is not valid YAML ({problem}); check indentation and quoting"
        ) from None
    except (RecursionError, MemoryError) as exc:  # a last resort: the bounds here should prevent these
        raise RecipeError(f"{source}: {_too_big(exc)}") from None


def load_yaml_value(text: str) -> Any:
    """A `--set` value, read as YAML under the same bounds as a recipe file. Text that is not
    valid YAML stays a string (`--set model.name=a: b`); a refused value raises ValueError."""
    try:
        return _load(text)[0]
    except _Refused as exc:
        raise ValueError(exc.reason) from None
    except yaml.YAMLError:
        return text
    except (RecursionError, MemoryError) as exc:
        raise ValueError(_too_big(exc)) from None


def _too_big(exc: BaseException) -> str:
    return (f"too large or too deeply nested to read ({type(exc).__name__}); "
            f"a recipe is a few small sections")


def _load(text: str) -> tuple[Any, dict[KeyPath, int]]:
    loader = _DepthBoundLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[KeyPath, int] = {}
        if node is not None:
            _check_depth(node)
            _walk(node, (), lines, set())
        data = loader.construct_document(node) if node is not None else None
    except _TooDeep as exc:
        raise _Refused(exc.mark.line + 1, (), f"nests deeper than {MAX_DEPTH} levels (aliases included); "
                       f"a recipe is a few small sections, check the brackets and indentation") from None
    finally:
        loader.dispose()
    return data, lines


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_depth(root: yaml.Node) -> None:
    """Refuse nesting deeper than MAX_DEPTH counted through aliases: a chain of anchors, each
    holding the previous one, composes shallow but constructs (and is copied) deep. Iterative
    and memoised per node, so nested aliases cost linear time; a cycle (an anchor holding
    itself) adds no depth here (the schema refuses cyclic values)."""
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            below = [depth.get(id(c), 0) for c in _children(node) if id(c) in depth]
            depth[key] = 1 + max(below, default=0)
            if depth[key] > MAX_DEPTH:
                raise _TooDeep(node.start_mark)
            continue
        if key in depth or key in on_path:
            continue
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in depth and id(c) not in on_path)


def _check_int(node: yaml.ScalarNode, path: KeyPath) -> None:
    """An integer literal too long or too large for any recipe setting, refused with its line
    before Python's conversion raises (over 4300 digits) or a huge value reaches torch."""
    value = None
    if len(node.value) <= _MAX_INT_CHARS:
        value = _INTS.construct_yaml_int(node)
    if value is None or abs(value) > MAX_INT:
        raise _Refused(node.start_mark.line + 1, path,
                       f"the integer {_short(node.value, 20)} is out of range; recipe integers fit in "
                       f"64 bits (magnitude at most 2**64 - 1)")


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], seen: set) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    # An alias points at a node already walked: walking it again would loop forever on a
    # self-reference and take exponential time on nested aliases ("billion laughs").
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
        _check_int(node, path)
    if isinstance(node, yaml.MappingNode):
        first_line: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _INT_TAG:
                _check_int(key_node, path)
            key = key_node.value
            if not isinstance(key, str):
                continue  # a complex key: construction refuses it
            if key in first_line and key_node.tag != "tag:yaml.org,2002:merge":
                # PyYAML keeps the last one silently; a recipe must not mean two things.
                raise _Refused(key_node.start_mark.line + 1, (), f"key {_short(key)!r} appears twice in the "
                               f"same section (first on line {first_line[key]}); keep one")
            first_line.setdefault(key, key_node.start_mark.line + 1)
            lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), lines, seen)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def line_for(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of `path`, or of its nearest ancestor present in the file."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())
