"""The method contract is written down, and held: outside llmtune/methods nothing asks a method
(or its options) for what `Method` does not declare, and no package imports another package's
private (`_name`) modules or names. Read from the code's syntax, like tests/test_layering.py."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "llmtune"
METHODS = PACKAGE / "methods"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


def _sources() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text())) for p in PACKAGE.rglob("*.py")}


def _undeclared_method_names() -> set[str]:
    """Names that some method or its options define but the `Method`/`MethodConfig` contract
    does not: reaching for one of them from outside llmtune/methods bypasses the contract."""
    from llmtune.methods.base import Method, MethodConfig
    from llmtune.methods.registry import all_methods

    declared = set(dir(Method)) | set(MethodConfig.model_fields) | set(dir(MethodConfig))
    found: set[str] = set()
    for method in all_methods().values():
        for cls in method.__mro__:
            if cls in (Method, object):
                break
            found.update(vars(cls))
        found.update(method.Config.model_fields)
    return {n for n in found - declared if not n.startswith("__")} - LIBRARY_NAMES


LIBRARY_NAMES = {"peft_config"}
"""Names a method defines that are also peft's or transformers' own attributes: reading them
off a body (a PeftModel's `peft_config`) asks the library, not the method."""


def _reaches(tree: ast.Module, undeclared: set[str]) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2):
            continue
        target, attribute = ast.unparse(node.args[0]), node.args[1]
        name = attribute.value if isinstance(attribute, ast.Constant) else None
        if "method" in target.lower() or name in undeclared:
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_getattr_or_hasattr_reaches_onto_methods_outside_methods():
    undeclared = _undeclared_method_names()
    assert "num_virtual_tokens" in undeclared  # the check knows what it guards
    reaches = [f"{path.relative_to(ROOT)}:{line}: {code}"
               for module, (path, tree) in _sources().items() if METHODS not in path.parents
               for line, code in _reaches(tree, undeclared)]
    assert not reaches, ("ask a method only what llmtune/methods/base.py's Method declares (add it there, "
                         "with a docstring, if it is missing):\n" + "\n".join(reaches))


def _private_owner(module: str, known: dict[str, tuple[Path, ast.Module]]) -> str | None:
    """The package a private module belongs to, if `module` is one or lies inside one."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def _private_imports(module: str, path: Path, tree: ast.Module, known) -> list[str]:
    mine = _package_of(module, path)
    bad = []
    for node in ast.walk(tree):
        targets: list[tuple[str, str | None]] = []
        if isinstance(node, ast.Import):
            targets = [(alias.name, None) for alias in node.names if alias.name.startswith("llmtune")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("llmtune"):
            targets = [(node.module, alias.name) for alias in node.names]
        for source, name in targets:
            owner = _private_owner(source, known)
            if owner is None and name and name.startswith("_") and not name.startswith("__"):
                inner = f"{source}.{name}"
                if inner in known:  # a private module named in `from package import _module`
                    owner = source
                else:  # a private name of `source`: it belongs to the package `source` sits in
                    owner = _package_of(source, known[source][0]) if source in known else source
            if owner is not None and owner != mine:
                what = f"{source}.{name}" if name else source
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module} imports {what} (private to {owner})")
    return bad


def test_no_private_imports_across_packages():
    known = _sources()
    bad = [line for module, (path, tree) in known.items() for line in _private_imports(module, path, tree, known)]
    assert not bad, ("a `_private` module or name is its package's own; make what others need public:\n"
                     + "\n".join(bad))


def test_the_checks_catch_what_they_guard():
    """Each check finds a planted violation, so a silent pass means the code is clean."""
    undeclared = _undeclared_method_names()
    planted = ast.parse("getattr(method.config, 'num_virtual_tokens', None)\nhasattr(body, 'num_virtual_tokens')\n"
                        "getattr(model.body.config, 'pad_token_id', None)\n")
    assert [line for line, _ in _reaches(planted, undeclared)] == [1, 2]
    known = _sources()
    path = PACKAGE / "train" / "planted.py"
    tree = ast.parse("from llmtune.methods.preference._trainer import last_checkpoint\n"
                     "from llmtune.models.load import _hub_error\nfrom llmtune.train.loop import fit\n")
    assert len(_private_imports("llmtune.train.planted", path, tree, known)) == 2
