"""Hostile recipes never crash: what the YAML parser and number conversion themselves can
raise (structures of any depth, also through aliases; integers and floats of any size in
every YAML spelling; strings, keys and lists of any length; files of any size), fuzzed in
the file and through --set. Every one ends with exit code 2, the file and line where known,
and no Python traceback. The valid starting recipes and the checks come from
test_fuzz_recipes.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtune.recipe.load import MAX_RECIPE_BYTES
from llmtune.recipe.yaml_lines import MAX_DEPTH, MAX_INT
from test_fuzz_recipes import (COUNTS, FUZZ, WORD, _field_table, _is_section, _methods_for_classification, _set,
                               base_recipe, check_failure, data_file)  # noqa: F401 (data_file: the fixture)

# -- hostile recipes: what the parser and number conversion themselves can raise ----------
# Structures of any depth (plain or through chains of aliases), integers of any size in every
# YAML 1.1 spelling, floats of any length or exponent, strings, keys and lists of any length,
# and files of any size. Each class is generated with its size drawn from a range that spans
# both sides of llmtune's bound, in the file and through --set.


HOLE = "HOSTILE_VALUE_GOES_HERE"


@st.composite
def nested(draw):
    """(flow YAML nesting `depth` levels, depth); a mix of sequences and mappings."""
    depth = draw(st.integers(1, 3000))
    pattern = draw(st.lists(st.sampled_from("[{"), min_size=1, max_size=6))  # repeated: drawing 3000 is slow
    kinds = (pattern * depth)[:depth]
    opening = "".join("[" if k == "[" else "{k: " for k in kinds)
    closing = "".join("]" if k == "[" else "}" for k in reversed(kinds))
    return opening + draw(st.sampled_from(["1", "x", "[]", "{}"])) + closing, depth + 1


@st.composite
def alias_chain(draw):
    """(YAML lines defining anchors that each nest the previous one, depth of the last)."""
    n = draw(st.integers(2, 400))
    fan = draw(st.integers(1, 3))  # each level holds the previous one this many times
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, n)]
    return lines, n + 1  # +1: the scalar at the bottom


def spell_int(value: int, form: str) -> str:
    """`value` in one of YAML 1.1's integer spellings (may raise ValueError past 4300 digits)."""
    sign, v = ("-" if value < 0 else ""), abs(value)
    if form == "sexagesimal":
        parts = []
        while v:
            v, r = divmod(v, 60)
            parts.append(str(r))
        return sign + ":".join(reversed(parts or ["0"]))
    spelled = {"hex": f"0x{v:x}", "oct": f"0{v:o}", "bin": f"0b{v:b}", "underscore": f"{v:_}"}.get(form)
    return sign + (spelled if spelled is not None else str(v))


INT_FORMS = st.sampled_from(["decimal", "hex", "oct", "bin", "underscore", "sexagesimal"])


@st.composite
def huge_int(draw):
    """(YAML text of an integer of 1..20000 digits, whether it lies outside 64 bits)."""
    digits = draw(st.integers(1, 20000))
    low = 10 ** (digits - 1) if digits > 1 else 0
    value = low + draw(st.integers(0, min(10**digits - 1 - low, 10**6)))
    value = -value if draw(st.booleans()) else value
    form = draw(INT_FORMS)
    if digits > 2000 and form == "sexagesimal":
        form = "hex"  # spelling a huge number in base 60 is slow in the test itself
    try:
        text = spell_int(value, form)
    except ValueError:  # the test's own str() past 4300 digits: spell a power of ten by hand
        value = 10 ** (digits - 1)
        text = ("-" if draw(st.booleans()) else "") + "1" + "0" * (digits - 1)
    return text, abs(value) > MAX_INT


def boundary_int():
    """Integers at the 64-bit bound: kept at it, refused one past it."""
    return st.sampled_from([(str(MAX_INT), False), (str(-MAX_INT), False), (str(MAX_INT + 1), True),
                            (f"0x{MAX_INT + 1:x}", True), (f"-0b{MAX_INT + 1:b}", True), (str(2**63), False)])


@st.composite
def huge_float(draw):
    """Float literals that overflow to inf: long mantissas or huge exponents (YAML 1.1 floats
    need a dot and a signed exponent; each float field refuses inf)."""
    mantissa = "1" + "0" * draw(st.integers(400, 20000))
    exponent = draw(st.integers(400, 100000))
    return draw(st.sampled_from([f"{mantissa}.5", f"1.0e+{exponent}", f"{mantissa}.0e+{exponent}"]))


def _placement(draw, data_file: Path, kinds: tuple[str, ...] | None):
    """A base recipe with HOLE at a schema field of one of `kinds` (None: at an unknown key);
    returns (recipe dict, path)."""
    recipe = base_recipe(data_file, draw(st.sampled_from(_methods_for_classification())))
    table = [row[0] for row in _field_table(recipe) if _is_section(recipe, row[0][:-1]) and row[1] in (kinds or ())]
    if kinds is None or not table or draw(st.booleans()):
        section = draw(st.sampled_from([(), ("train",), ("model",), ("method",), ("data", "columns")]))
        path = section + ("zz_" + draw(WORD),)
    else:
        path = draw(st.sampled_from(table))
    _set(recipe, path, HOLE)
    return recipe, path


def _render(recipe: dict, hostile: str, before: tuple[str, ...] = ()) -> tuple[str, int]:
    """The recipe as YAML with HOLE replaced by raw YAML text; returns (text, line of HOLE)."""
    lines = list(before) + yaml.safe_dump(recipe, sort_keys=False, width=10**9).splitlines()
    line = next(i for i, text in enumerate(lines, start=1) if HOLE in text)
    return "\n".join(lines).replace(HOLE, hostile) + "\n", line


ANY_FIELD = ("int", "float", "bool", "str", "literal", "list", "dict", "union")
DEEP = rf"nests deeper than {MAX_DEPTH} levels"


@st.composite
def hostile_recipe(draw, data_file: Path):
    """(YAML text, regexes the error must match) for one hostile class."""
    what = draw(st.sampled_from(["depth", "alias", "int", "boundary", "float", "string", "key", "keys", "items"]))
    if what == "depth":
        value, depth = draw(nested())
        recipe, path = _placement(draw, data_file, ANY_FIELD if depth > MAX_DEPTH else None)
        text, line = _render(recipe, value)
        # The root mapping is level 1, the value sits at level len(path) + 1.
        return text, [rf":{line}: {DEEP}"] if len(path) + depth > MAX_DEPTH else [re.escape(".".join(path))]
    if what == "alias":
        chain, depth = draw(alias_chain())
        recipe, path = _placement(draw, data_file, ANY_FIELD)
        text, _ = _render(recipe, f"*a{len(chain) - 1}", before=tuple(chain))
        return text, [DEEP] if len(path) + depth > MAX_DEPTH else ["a0: unknown key"]
    if what in ("int", "boundary", "float"):
        if what == "float":
            recipe, path = _placement(draw, data_file, ("float",))
            return _render(recipe, draw(huge_float()))[0], [re.escape(".".join(path))]
        value, refused = draw(huge_int() if what == "int" else boundary_int())
        # An integer within 64 bits can be valid where it lands, so it goes to an unknown key.
        recipe, path = _placement(draw, data_file, ("int",) if refused else None)
        dotted = re.escape(".".join(path))
        text, line = _render(recipe, value)
        return text, [rf":{line} {dotted}: the integer .* is out of range"] if refused else [dotted]
    recipe, path = _placement(draw, data_file, None)
    dotted = re.escape(".".join(path))
    if what == "string":
        return _render(recipe, "x" * draw(st.integers(1000, 50000)))[0], [dotted + ": unknown key"]
    if what == "key":  # a complex key (`? key`): PyYAML's simple keys stop at 1024 characters
        text = _render(recipe, "1")[0] + f"? zz{'k' * draw(st.integers(100, 30000))}\n: 1\n"
        return text, [r"zzk+\.\.\.k+: unknown key"]
    n = draw(st.integers(60, 2000))
    if what == "keys":  # thousands of unknown keys: the first are listed, then a count
        return _render(recipe, "1")[0] + "".join(f"zz{i}: 1\n" for i in range(n)), [r"\.\.\. and \d+ more"]
    return _render(recipe, "[" + ", ".join(["1"] * n) + "]")[0], [dotted + ": unknown key"]


def test_fuzz_hostile_recipes(data_file, tmp_path, cli):
    path = tmp_path / "recipe.yaml"

    @settings(FUZZ, max_examples=70)
    @given(case=hostile_recipe(data_file))
    def run(case):
        text, needles = case
        path.write_text(text)
        assert len(text.encode()) <= MAX_RECIPE_BYTES  # the size bound has a test of its own
        res = cli("validate", path)
        check_failure(res, path, needles)
        assert len(res.err) < 20_000, res.err[:2000]  # every value in a message is shortened
        COUNTS["hostile"] = COUNTS.get("hostile", 0) + 1

    run()
    assert COUNTS["hostile"] >= 70


@st.composite
def hostile_override(draw):
    """(--set item, needle): the same classes as a command-line value."""
    key = draw(st.sampled_from(["train.max_steps", "train.seed", "model.name", "train.lr", "zz.new"]))
    what = draw(st.sampled_from(["depth", "int", "float", "string"]))
    if what == "depth":
        value, depth = draw(nested())
        deep = depth > MAX_DEPTH
        return f"{key}={value}", "nests deeper" if deep else re.escape(f"--set {key}")
    if what == "int":
        value, refused = draw(huge_int())
        return f"{key}={value}", "out of range" if refused else None
    if what == "float":
        return f"{key}={draw(huge_float())}", None
    return f"{key}={'x' * draw(st.integers(1000, 100000))}", None


def test_fuzz_hostile_overrides(data_file, tmp_path, cli):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(base_recipe(data_file, "lora")))

    @settings(FUZZ, max_examples=40)
    @given(case=hostile_override())
    def run(case):
        item, needle = case
        res = cli("validate", path, "--set", item)
        assert "Traceback" not in res.err and len(res.err) < 20_000, res.err[:2000]
        assert res.code in (0, 2), res.err[:2000]  # some values are valid (a long model name, a small int)
        if needle is not None:
            assert res.code == 2 and re.search(needle, res.err), (item[:80], res.err[:2000])
        COUNTS["hostile_set"] = COUNTS.get("hostile_set", 0) + 1

    run()
    assert COUNTS["hostile_set"] >= 40


def test_oversized_recipe_is_refused_before_parsing(tmp_path, cli):
    path = tmp_path / "recipe.yaml"
    path.write_text("model: {name: tiny-bert}\n" + "# padding\n" * (MAX_RECIPE_BYTES // 10 + 1))
    res = cli("validate", path)
    assert res.code == 2 and "too large for a recipe" in res.err, res.err


@pytest.mark.parametrize("exc", [RecursionError, MemoryError])
def test_parser_exhaustion_is_a_user_error(exc, tmp_path, cli, monkeypatch):
    """Should the bounds above ever be outrun, what the parser raises is still a user error."""
    from llmtune.recipe import yaml_lines

    def exhausted(*_args, **_kw):
        raise exc()

    monkeypatch.setattr(yaml_lines._DepthBoundLoader, "get_single_node", exhausted)
    path = tmp_path / "recipe.yaml"
    path.write_text("model: {name: tiny-bert}\n")
    res = cli("validate", path)
    assert res.code == 2 and "too large or too deeply nested" in res.err and "Traceback" not in res.err, res.err
