"""Sizes that keep code readable in one sitting, across the whole package: a module at most 500
lines, a function at most 60 (from its `def` to its last line, nested functions counted in
their parent too), a method module (llmtune/methods/**) under 200. Read from the files, like
tests/test_layering.py; a test that plants an oversize file shows the checks can fail."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "llmtune"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_METHOD_MODULE_LINES = 199  # "under 200"


def _too_long(path: Path, text: str) -> list[str]:
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    lines = len(text.splitlines())
    method_module = (PACKAGE / "methods") in path.parents
    limit = MAX_METHOD_MODULE_LINES if method_module else MAX_MODULE_LINES
    found = [f"{where}: {lines} lines (at most {limit}{' for a method module' if method_module else ''})"] \
        if lines > limit else []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{where}:{node.lineno} {node.name}: {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


def test_modules_and_functions_stay_small():
    found = [problem for path in sorted(PACKAGE.rglob("*.py")) for problem in _too_long(path, path.read_text())]
    assert not found, "split these along what they do (one job per module, short functions):\n" + "\n".join(found)


def test_the_checks_catch_what_they_guard():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long_function = f"def f():\n{body}\n"
    assert _too_long(PACKAGE / "train" / "planted.py", long_function) == \
        [f"llmtune/train/planted.py:1 f: {MAX_FUNCTION_LINES + 1} lines (at most {MAX_FUNCTION_LINES})"]
    method_module = "\n" * 200
    assert len(_too_long(PACKAGE / "methods" / "weights" / "planted.py", method_module)) == 1
    assert not _too_long(PACKAGE / "train" / "planted.py", method_module)
