"""The package's floors, in the order data flows: a module imports only from its own floor or
the floors below it, and no modules import each other in a circle. Lazy imports inside
functions count (they are how circles hide); imports under `if TYPE_CHECKING:` do not.

Stages imported alone pull in only what they need: the recipe stage no torch, the data stage
no method module, method discovery neither torch nor the training loop."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "llmtune"

# Top floor first. A new top-level module or package must be given a floor here.
FLOORS = [
    ("cli", ("llmtune.cli", "llmtune.__main__")),
    ("verbs", ("llmtune.embed", "llmtune.runs", "llmtune.index", "llmtune.report", "llmtune.preview",
               "llmtune.doctor", "llmtune.serve", "llmtune.chat")),
    ("recipe", ("llmtune.recipe",)),
    ("train", ("llmtune.train",)),
    ("methods", ("llmtune.methods",)),
    ("evaluate", ("llmtune.evaluate",)),
    ("generation", ("llmtune.generation",)),
    ("models and data", ("llmtune.models", "llmtune.data")),
    ("base", ("llmtune.errors", "llmtune.console", "llmtune.assets", "llmtune")),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _floor(module: str) -> int:
    best = None
    for level, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (level, len(prefix))
    assert best is not None, f"{module} has no floor in tests/test_layering.py FLOORS; give it one"
    return best[0]


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """llmtune modules `path` imports, anywhere in the file except TYPE_CHECKING blocks."""
    found: set[str] = set()

    def visit(node):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("llmtune"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmtune") \
                and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(module)
    return {m for m in found if m in known}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) for name, path in modules.items()}


def test_no_import_runs_up_a_floor():
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            if _floor(target) < _floor(module):  # a smaller index is a higher floor
                upward.append(f"{module} ({FLOORS[_floor(module)][0]}) imports {target} "
                              f"({FLOORS[_floor(target)][0]})")
    assert not upward, "imports that run up a floor:\n" + "\n".join(sorted(upward))


def test_no_import_circles():
    graph = _graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def strongconnect(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            strongconnect(v)
    # A package's __init__ that re-exports a submodule is not a circle of meaning, but none exist today.
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("code,forbidden", [
    ("import llmtune.recipe; from llmtune.recipe import load_recipe", ("torch", "transformers", "llmtune.train")),
    ("import llmtune.data.pipeline", ("llmtune.methods", "llmtune.train", "llmtune.recipe")),
    ("from llmtune.methods.registry import all_methods; all_methods()",
     ("torch", "transformers", "peft", "trl", "llmtune.train", "llmtune.recipe")),
    ("import llmtune.train.session", ("llmtune.recipe", "llmtune.cli", "llmtune.runs")),
    ("import llmtune.cli", ("torch", "transformers")),
])
def test_a_stage_alone_pulls_in_only_what_it_needs(code, forbidden):
    probe = f"import sys; {code}; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in " \
            f"('torch', 'transformers', 'peft', 'trl') or m.startswith('llmtune'))))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    loaded = res.stdout.split()
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not bad, f"`{code}` imported {bad}"


def test_each_method_lives_in_a_module_named_after_it():
    """`frozen-head` in `frozen_head.py`: what lets reading a recipe import only its own
    method's module (registry.find_method); a method elsewhere would still work, through full
    discovery, but every `llmtune validate` of it would import all of them."""
    from llmtune.methods.registry import all_methods

    misnamed = {name: m.__module__ for name, m in all_methods().items()
                if m.__module__.rsplit(".", 1)[1] != name.replace("-", "_")}
    assert not misnamed


def test_reading_a_recipe_imports_only_its_own_method():
    probe = ("import sys; from llmtune.recipe import load_recipe; "
             f"r = load_recipe({str(ROOT / 'recipes' / 'sst2-adapter.yaml')!r}); "
             "print(type(r.recipe.method).__module__); "
             "print(' '.join(sorted(m for m in sys.modules if m.startswith('llmtune.methods.'))))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    owner, loaded = res.stdout.splitlines()
    assert owner == "llmtune.methods.adapters.adapter"
    methods = [m for m in loaded.split() if m.count(".") == 3 and not m.rsplit(".", 1)[1].startswith("_")]
    assert methods == ["llmtune.methods.adapters.adapter"], loaded


def test_every_method_module_is_discovered():
    """Each public module of a method family registers exactly the methods it defines: a new
    method is one file in its family's folder, with no list to update anywhere."""
    from llmtune.methods.registry import all_methods

    by_module = {m.__module__ for m in all_methods().values()}
    files = {_module_name(p) for p in (PACKAGE / "methods").glob("*/*.py")
             if not p.name.startswith("_") and "register_method" in p.read_text()}
    assert files and files == by_module
