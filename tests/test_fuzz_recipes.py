"""Bad recipes never crash: property-based fuzzing (hypothesis) of malformed recipes.

Each generated recipe starts from a valid one and is broken on purpose: wrong types,
unknown keys, missing sections, out-of-range values, bad method options, broken YAML,
bad --set overrides (hostile input for the parser itself: test_fuzz_hostile.py, which
reuses the starting recipes and checks here). Every one must end with exit code 2, a message that names the file
with a line number (and the key, where there is one), and no Python traceback.

The mutations are derived from the schema itself (every field of every section and of
every registered method), so fields added later are fuzzed without editing this file.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from conftest import tiny_sst2

COUNTS: dict[str, int] = {}
FUZZ = settings(database=None, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])


# -- the schema, as leaves --------------------------------------------------------------

def _kind(annotation) -> tuple[str, tuple]:
    """Classify a field's type: section, literal, int, float, bool, str, list, dict, union."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _kind(inner[0])
        return "union", tuple(inner)
    if origin is typing.Annotated:
        return _kind(args[0])
    if origin is typing.Literal:
        return "literal", args
    if origin is list:
        return "list", args
    if origin is dict or annotation is dict:
        return "dict", args
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section", (annotation,)
    if annotation in (int, float, bool, str):
        return annotation.__name__, ()
    return "other", ()


def leaves(model: type[BaseModel], prefix: tuple = ()) -> list[tuple[tuple, str, tuple, list]]:
    """(path, kind, args, constraints) for every field, sections included, recursively."""
    out = []
    for name, info in model.model_fields.items():
        path = prefix + (name,)
        kind, args = _kind(info.annotation)
        out.append((path, kind, args, list(info.metadata)))
        if kind == "section":
            out.extend(leaves(args[0], path))
    return out


def _methods_for_classification() -> list[str]:
    from llmtune.methods.registry import all_methods

    return sorted(n for n, m in all_methods().items() if "classification" in m.tasks)


# -- recipes ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    return tiny_sst2(tmp_path_factory.mktemp("fuzzdata"), 8)


def base_recipe(data_file: Path, method: str) -> dict:
    return {
        "model": {"name": "tiny-bert", "pooling": "mean"},
        "data": {"task": "classification", "train": {"path": str(data_file)},
                 "columns": {"text": "sentence", "label": "label"}, "max_length": 16, "eval_fraction": 0.25},
        "method": {"name": method},
        "train": {"max_steps": 1, "batch_size": 2, "lr": 1e-3},
        "eval": {"batch_size": 4},
        "output": {"dir": str(data_file.parent / "never-written")},
    }


def _get(d, path):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _is_section(recipe: dict, path: tuple) -> bool:
    return isinstance(_get(recipe, path) if path else recipe, dict)


def _exists(d, path) -> bool:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return False
        d = d[p]
    return True


def _field_table(recipe: dict):
    """Every field of the recipe's sections and of its method, with its type."""
    from llmtune.methods.registry import all_methods
    from llmtune.recipe.schema import RecipeBase

    table = leaves(RecipeBase)
    name = recipe["method"].get("name") if isinstance(recipe.get("method"), dict) else None
    method = all_methods().get(name) if isinstance(name, str) else None
    if method is not None:
        table += [(("method",) + p, k, a, c) for p, k, a, c in leaves(method.Config) if p != ("name",)]
    return table


WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
NOT_A_NUMBER = WORD.map(lambda w: "x" + w)  # never parses as a number, bool, inf or nan
INT64 = st.integers(-(2**63), 2**63 - 1)  # larger integers are refused while parsing (see the hostile section)


def wrong_value(kind: str, args: tuple):
    """A value no field of this kind accepts (pydantic's lax mode coerces "3" to 3, so
    strings here always start with a letter that makes them non-numeric)."""
    if kind in ("int", "float"):
        return st.one_of(NOT_A_NUMBER, st.just([1]), st.just({"k": 1}))
    if kind == "bool":
        return st.one_of(NOT_A_NUMBER, st.integers(2, 99), st.just([True]))
    if kind == "str":
        return st.one_of(INT64, st.just(["a"]), st.just({"k": "v"}), st.floats(0.5, 9))
    if kind == "literal":
        return st.one_of(NOT_A_NUMBER.filter(lambda w: w not in args), st.integers(2, 99), st.just([]))
    if kind in ("list", "union"):
        return st.one_of(st.integers(2, 99), st.just({"k": 1}), st.just([{"k": 1}]))
    if kind == "section" and "path" in args[0].model_fields:
        return st.one_of(INT64, st.just([1, 2]))  # a string is the `path` shorthand
    if kind in ("dict", "section"):
        return st.one_of(INT64, NOT_A_NUMBER, st.just([1, 2]))
    return st.just(object)  # unknown kinds are skipped by the caller


def out_of_range(kind: str, constraints: list):
    """A number just outside one of the field's bounds, or a non-finite float."""
    options = []
    for c in constraints:
        for bound, below in (("gt", True), ("ge", True), ("lt", False), ("le", False)):
            v = getattr(c, bound, None)
            if v is None:
                continue
            step = st.integers(1, 1000) if kind == "int" else st.floats(1e-6, 1e3)
            if bound == "gt":
                options.append(step.map(lambda s, v=v: v - s) | st.just(v))
            elif bound == "ge":
                options.append(step.map(lambda s, v=v: v - s))
            elif bound == "lt":
                options.append(st.just(v) | step.map(lambda s, v=v: v + s))
            else:
                options.append(step.map(lambda s, v=v: v + s))
    if kind == "float" and constraints:
        options.append(st.sampled_from([float("inf"), float("-inf"), float("nan")]))
    return st.one_of(options) if options else None


@st.composite
def mutation(draw, recipe: dict):
    """Apply one breaking change to `recipe` in place; return (path, needle regex or None)."""
    table = [row for row in _field_table(recipe) if _is_section(recipe, row[0][:-1]) and row[1] != "other"]
    what = draw(st.sampled_from(["type", "range", "unknown", "missing", "method", "file"]))
    if what == "range":
        ranged = [row for row in table if row[1] in ("int", "float") and out_of_range(row[1], row[3]) is not None]
        if not ranged:
            return None, None
        path, kind, _, cons = draw(st.sampled_from(ranged))
        _set(recipe, path, draw(out_of_range(kind, cons)))
        return path, re.escape(".".join(path))
    if what == "type":
        path, kind, args, _ = draw(st.sampled_from(table))
        _set(recipe, path, draw(wrong_value(kind, args)))
        return path, re.escape(".".join(path)) + r"[.:]"
    if what == "unknown":
        sections = [()] + [row[0] for row in table if row[1] == "section" and isinstance(_get(recipe, row[0]), dict)]
        sections += [("method",)] if isinstance(recipe.get("method"), dict) else []
        section = draw(st.sampled_from(sections))
        node = _get(recipe, section) if section else recipe
        valid = {row[0][-1] for row in _field_table(recipe) if row[0][:-1] == section} | {"name"}
        key = draw(WORD.filter(lambda k: k not in valid and k not in node))
        node[key] = draw(st.one_of(INT64, WORD, st.none()))
        return section + (key,), re.escape(".".join(section + (key,))) + ": unknown key"
    if what == "missing":
        required = [("model",), ("data",), ("method",), ("model", "name"), ("data", "task"), ("data", "train"),
                    ("method", "name")]
        path = draw(st.sampled_from([p for p in required if _exists(recipe, p)]))
        (_get(recipe, path[:-1]) if len(path) > 1 else recipe).pop(path[-1])
        return path, re.escape(".".join(path))
    if what == "method":
        if not isinstance(recipe.get("method"), dict):
            return None, None
        recipe["method"]["name"] = draw(NOT_A_NUMBER)
        return ("method", "name"), r"unknown method"
    # "file": a data path that does not exist
    if not isinstance(_get(recipe, ("data", "train")), dict):
        return None, None
    recipe["data"]["train"]["path"] = draw(WORD) + ".tsv"
    return ("data", "train", "path"), r"data\.train\.path: file not found"


def _set(recipe, path, value):
    node = _get(recipe, path[:-1]) if len(path) > 1 else recipe
    node[path[-1]] = value


def check_failure(res, path: Path, needles: list[str]):
    text = res.out + res.err
    assert res.code == 2, text
    assert "Traceback" not in text, text
    assert re.search(re.escape(str(path)) + r":\d+", res.err), res.err
    for needle in needles:
        assert re.search(needle, res.err), (needle, res.err)


def _needles(recipe: dict, applied: list) -> list[str]:
    """Needles of mutations still visible in the final recipe: a later change can hide an
    earlier one (an unknown method name hides errors in that method's options)."""
    from llmtune.methods.registry import all_methods

    method_ok = isinstance(recipe.get("method"), dict) and recipe["method"].get("name") in all_methods()
    out = []
    for path, needle in applied:
        if path[0] == "method" and path != ("method", "name") and not method_ok:
            continue
        if all(_is_section(recipe, path[:i]) for i in range(len(path))):
            out.append(needle)
    return out


@st.composite
def broken_recipe(draw, data_file: Path):
    recipe = base_recipe(data_file, draw(st.sampled_from(_methods_for_classification())))
    applied = {}  # a later change to the same key replaces the earlier one's expectation
    for _ in range(draw(st.integers(1, 3))):
        path, needle = draw(mutation(recipe))
        if path is not None:
            applied[path] = needle
    return recipe, list(applied.items())


def test_base_recipes_are_valid(data_file, tmp_path, cli):
    for method in _methods_for_classification():
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump(base_recipe(data_file, method)))
        res = cli("validate", path)
        assert res.code == 0, res.err


def test_fuzz_structural_mistakes_validate(data_file, tmp_path, cli):
    path = tmp_path / "recipe.yaml"

    @settings(FUZZ, max_examples=400)
    @given(case=broken_recipe(data_file))
    def run(case):
        recipe, applied = case
        path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
        check_failure(cli("validate", path), path, _needles(recipe, applied))
        COUNTS["structural"] = COUNTS.get("structural", 0) + 1

    run()
    assert COUNTS["structural"] >= 400


def test_fuzz_structural_mistakes_train(data_file, tmp_path, cli):
    """The same mistakes through `llmtune train`: refused before any model is built."""
    path = tmp_path / "recipe.yaml"

    @settings(FUZZ, max_examples=40)
    @given(case=broken_recipe(data_file))
    def run(case):
        recipe, applied = case
        path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
        check_failure(cli("train", path), path, _needles(recipe, applied))
        COUNTS["train"] = COUNTS.get("train", 0) + 1

    run()
    assert COUNTS["train"] >= 40
    assert not (data_file.parent / "never-written").exists()


# -- broken YAML -------------------------------------------------------------------------

def _with_value(value: str):
    """Replace the value of a `key: value` line (or give a bare `key:` one)."""
    def corrupt(line: str) -> str:
        key = line.split(":", 1)[0] if ":" in line else line
        return f"{key}: {value}"
    return corrupt


CORRUPTIONS = [
    lambda line: "\t" + line,                 # a tab where indentation belongs
    _with_value("[unclosed, sequence"),        # an unclosed flow sequence
    _with_value("{a: 1, b"),                   # an unclosed flow mapping
    _with_value('"unterminated'),              # a quote that never ends
    _with_value("*undefined_anchor"),          # an alias of nothing
    _with_value("x: y: z"),                    # mapping values are not allowed here
    _with_value("!!python/object:os.system x"),  # a tag safe_load refuses to construct
    lambda line: "%TAG ! bad " + line,         # a directive inside a document
    lambda line: line + "\n- item",            # a sequence entry inside a mapping
]


@st.composite
def broken_yaml(draw, data_file: Path):
    text = yaml.safe_dump(base_recipe(data_file, draw(st.sampled_from(_methods_for_classification()))),
                          sort_keys=False)
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 2))):
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = draw(st.sampled_from(CORRUPTIONS))(lines[i])
    return "\n".join(lines) + "\n"


def test_fuzz_broken_yaml(data_file, tmp_path, cli):
    path = tmp_path / "recipe.yaml"

    @settings(FUZZ, max_examples=150)
    @given(text=broken_yaml(data_file))
    def run(text):
        try:
            yaml.safe_load(text)
        except yaml.YAMLError:
            pass
        else:
            raise AssertionError(f"the corruption left valid YAML:\n{text}")  # a bug in this test
        path.write_text(text)
        res = cli("validate", path)
        check_failure(res, path, [])
        COUNTS["yaml"] = COUNTS.get("yaml", 0) + 1

    run()
    assert COUNTS["yaml"] >= 150


@pytest.mark.parametrize("text,needle", [
    ("- just\n- a list\n", "a recipe is a mapping"),
    ("42\n", "a recipe is a mapping"),
    ("model: !!python/object/apply:os.system ['echo owned']\n", "not valid YAML"),
    ("model: &a {name: *a}\n", "model.name"),
    ("x: &a [*a]\n", "x: unknown key"),
    ("model: {name: tiny-bert}\nmodel: {name: minilm}\n", "appears twice"),
    ("train: {lr: 1.0e-3, lr: 1.0}\n", "appears twice"),
    ("model:\n  name: \xe9t\xe9\n", "not UTF-8"),
])
def test_odd_yaml_documents(text, needle, tmp_path, cli):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(text.encode("latin-1") if "\xe9" in text else text.encode())
    res = cli("validate", path)
    check_failure(res, path, [re.escape(needle)])


def test_billion_laughs_is_refused_quickly(tmp_path, cli):
    """Nested aliases that expand to 10^9 items: shared references in memory, but any
    traversal or repr of them would never finish."""
    import time

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    path = tmp_path / "recipe.yaml"
    path.write_text("\n".join(lines) + "\nmodel: {name: *a9}\ntrain: {lr: *a9}\n")
    start = time.perf_counter()
    res = cli("validate", path)
    assert time.perf_counter() - start < 10
    check_failure(res, path, [])


# -- --set overrides -----------------------------------------------------------------------

@st.composite
def broken_override(draw, recipe: dict):
    table = [row for row in _field_table(recipe) if row[1] in ("int", "float", "bool", "literal")]
    path, kind, args, _ = draw(st.sampled_from(table))
    value = draw(wrong_value(kind, args).filter(lambda v: not isinstance(v, dict)))
    rendered = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return f"{'.'.join(path)}={rendered}", re.escape(f"--set {'.'.join(path)}")


def test_fuzz_overrides(data_file, tmp_path, cli):
    path = tmp_path / "recipe.yaml"
    recipe = base_recipe(data_file, "lora")
    path.write_text(yaml.safe_dump(recipe))

    @settings(FUZZ, max_examples=60)
    @given(case=broken_override(recipe))
    def run(case):
        item, needle = case
        res = cli("validate", path, "--set", item)
        assert res.code == 2 and "Traceback" not in res.err and re.search(needle, res.err), (item, res.err)
        COUNTS["set"] = COUNTS.get("set", 0) + 1

    run()
    assert COUNTS["set"] >= 60


@pytest.mark.parametrize("item", ["train.lr", "=3", "train..lr=1", "train.lr.x=1", "model=3", ".=", "train.lr=[1"])
def test_malformed_overrides(item, data_file, tmp_path, cli):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(base_recipe(data_file, "lora")))
    for verb in ("validate", "train"):
        res = cli(verb, path, "--set", item)
        assert res.code == 2, (verb, item, res.err)
        assert "Traceback" not in res.err and "--set" in res.err, (verb, item, res.err)
