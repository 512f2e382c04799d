"""Read a recipe file, apply --set overrides, validate, and report every problem at once."""

from __future__ import annotations

import copy
import difflib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError, create_model

from llmtune.errors import RecipeError
from llmtune.methods import parent_merge
from llmtune.models.run_source import is_run_dir, register_merger
from llmtune.recipe.local_paths import (DATA_SOURCES, RETRIEVAL_FILES, Problem, data_file_problems,
                                        model_folder_problems, resolve_data_path)
from llmtune.recipe.migrations import migrate, old_form_problems, prompted_classifier_problems
from llmtune.recipe.schema import RecipeBase
from llmtune.recipe.yaml_lines import line_for, load_yaml_value, load_yaml_with_lines

# A finished run named as `model.name` loads as its base with what it trained merged in; the
# loaders (models floor) may not import the methods, so every entry point that loads a recipe
# hands them the merge here.
register_merger(parent_merge.merged_folder)

MAX_RECIPE_BYTES = 256 * 1024
"""A recipe is a few small sections: a larger file is a mistake (a data file passed as the
recipe), refused before the pure-Python YAML parser spends minutes and memory on it."""


@dataclass
class LoadedRecipe:
    recipe: RecipeBase
    """The validated recipe (a `Recipe`), every path in it absolute (resolved against the recipe's folder)."""
    path: Path | None
    """The recipe file (None for a recipe built in code)."""
    raw: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    """What was read another way than written (a run's recipe with a key renamed since)."""


def load_run_recipe(path: Path, overrides: list[str] | None = None) -> LoadedRecipe:
    """A run's own resolved recipe.yaml, which llmtune wrote: keys renamed since are read under
    their new names (with `notices`), so a finished run stays usable; a user's recipe with an
    old key is refused instead, saying how to write it now (recipe/migrations.py)."""
    return load_recipe(path, overrides, written_by_llmtune=True)


def load_recipe(path: str | Path, overrides: list[str] | None = None, *,
                written_by_llmtune: bool = False) -> LoadedRecipe:
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.y*ml"))[:3]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise RecipeError(f"{path}: a folder, not a recipe file; pass the recipe's .yaml file{hint}")
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe file; check the path")
    size = path.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: {size:,} bytes is too large for a recipe (at most {MAX_RECIPE_BYTES:,}); "
                          f"is this a data file? Data goes under `data.train`")
    raw_bytes = path.read_bytes()
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw_bytes[: exc.start].count(b"\n") + 1
        raise RecipeError(f"{path}:{line}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from None
    raw, lines = load_yaml_with_lines(text, str(path))
    return recipe_from_dict(raw, source=str(path), lines=lines, overrides=overrides, base_dir=path.parent,
                            written_by_llmtune=written_by_llmtune)


def recipe_from_dict(
    raw: Any,
    source: str = "<recipe>",
    lines: dict | None = None,
    overrides: list[str] | None = None,
    base_dir: Path | None = None,
    written_by_llmtune: bool = False,
) -> LoadedRecipe:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}:1: a recipe is a mapping of sections (model, data, method, ...), "
                          f"not a {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    notices = migrate(raw, source) if written_by_llmtune else []
    _expand_shorthand(raw)
    owner, bad_overrides = _apply_overrides(raw, overrides or [])
    _expand_shorthand(raw)  # again: `--set data.train=file.tsv` is the shorthand too
    places = _Places(source, dict(lines or {}), owner)
    recipe, found = _validate(raw, base_dir or Path.cwd(), written_by_llmtune)
    found.sort(key=lambda problem: places.order(problem[0]))  # stable: one line's problems keep their order
    problems = bad_overrides + [f"{places.at(loc)}: {text}" for loc, text in found]
    if problems or recipe is None:
        noun = "problem" if len(problems) == 1 else "problems"
        raise RecipeError(f"{source}: {len(problems)} {noun} in the recipe", _first(problems))
    recipe = resolve_paths(recipe, (base_dir or Path.cwd()).absolute())
    return LoadedRecipe(recipe=recipe, path=Path(source) if source != "<recipe>" else None, raw=raw, notices=notices)


def _apply_overrides(raw: dict, overrides: list[str]) -> tuple[dict[tuple, str], list[str]]:
    """Apply each `--set`; returns which --set key answers for errors under each key path,
    and the overrides that could not be applied (as problems)."""
    owner: dict[tuple, str] = {}
    bad: list[str] = []
    for item in overrides:
        try:
            keypath = apply_override(raw, item)
            owner[keypath] = item.partition("=")[0].strip()
        except ValueError as exc:
            bad.append(f"--set {_short_repr(item)[1:-1]}: {exc}")
    return owner, bad


def _validate(raw: dict, base_dir: Path, written_by_llmtune: bool) -> tuple[RecipeBase | None, list[Problem]]:
    """The recipe (None when the schema refuses it) and every problem found, schema and beyond."""
    recipe = None
    method_name = raw["method"].get("name") if isinstance(raw.get("method"), dict) else None
    model = recipe_model(method_name if isinstance(method_name, str) else None)
    found: list[Problem] = [] if written_by_llmtune else old_form_problems(raw)
    try:
        recipe = model.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            loc = _clean_loc(err["loc"], raw, model)
            found.append((loc, _describe(err, loc, raw, model)))
    found += data_file_problems(raw, base_dir) + model_folder_problems(raw)
    if recipe is not None:
        found += _cross_checks(recipe, written_by_llmtune)
    return recipe, found


@dataclass
class _Places:
    """Where a problem at a key path is: the `--set` answerable for it, or the file's line."""

    source: str
    lines: dict
    owner: dict[tuple, str]

    def where(self, loc: tuple) -> str:
        for n in range(len(loc), 0, -1):
            if tuple(loc[:n]) in self.owner:
                return f"--set {_short_repr(self.owner[tuple(loc[:n])])[1:-1]}"
        line = line_for(self.lines, loc)
        return f"{self.source}:{line}" if line else self.source

    def at(self, loc: tuple) -> str:
        """Where a problem is and its key path, once: `--set train.lr` already names it."""
        place, dotted = self.where(loc), _dotted(loc)
        return place if place == f"--set {dotted}" else f"{place} {dotted}"

    def order(self, loc: tuple) -> tuple:
        """Problems under a --set first (as given), then in the file's line order."""
        if self.where(loc).startswith("--set "):
            return (0, 0)
        return (1, line_for(self.lines, loc) or 0)


@functools.cache
def recipe_model(method: str | None = None) -> type[RecipeBase]:
    """The model a recipe validates against, for a recipe whose `method.name` is `method`.

    For a registered method's name, the `method` section is that method's options alone,
    found by importing that method's module only: reading one recipe builds one method's
    options, not the ~15 of them (a third of `llmtune validate`'s run). For any other name
    (None, unknown, misspelled) it is the whole `Recipe` (recipe/full_schema.py), every
    method tagged by `method.name`, whose errors say which names exist. A valid file gives
    the same recipe either way."""
    from llmtune.methods.registry import find_method

    found = find_method(method) if method is not None else None
    if found is None:
        from llmtune.recipe.full_schema import Recipe

        return Recipe
    return create_model("Recipe", __base__=RecipeBase, __module__="llmtune.recipe.schema",
                        method=(found.Config, ...))


def apply_override(raw: dict, item: str) -> tuple:
    """`train.lr=1e-4` sets raw['train']['lr'] = 1e-4 (the value is parsed as YAML). Returns
    the key path this override is answerable for: the first section it had to create, or
    the whole path."""
    if "=" not in item:
        raise ValueError("expected KEY.PATH=VALUE, e.g. train.lr=1e-4")
    key, _, value = item.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ValueError("empty key in the path; expected KEY.PATH=VALUE")
    parsed = load_yaml_value(value) if value.strip() else None
    if isinstance(parsed, str):
        # YAML 1.1 reads `1e-4` (no dot) as a string; on a command line it means a number.
        try:
            parsed = float(parsed) if parsed.strip().lower() not in ("nan", "inf", "-inf", "infinity") else parsed
        except ValueError:
            pass
    node, created = raw, None
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
            created = created or tuple(parts[: i + 1])  # errors inside a new section are this --set's
        if not isinstance(child, dict):
            raise ValueError(f"{part!r} is not a section")
        node = child
    node[parts[-1]] = parsed
    return created or tuple(parts)


def _one_method_config(recipe_cls) -> type[BaseModel] | None:
    """The method options `recipe_cls` (a recipe_model) validates; None for the every-method union."""
    annotation = recipe_cls.model_fields["method"].annotation
    return annotation if isinstance(annotation, type) else None


def _clean_loc(loc: tuple, raw: dict, model) -> tuple:
    # A discriminated union puts the tag in the path: ('method', 'lora', 'r') -> ('method', 'r').
    # A recipe model of one method (recipe_model) has no tag to take out.
    loc = tuple(loc)
    if _one_method_config(model) is None and len(loc) >= 2 and loc[0] == "method":
        name = raw.get("method", {}).get("name") if isinstance(raw.get("method"), dict) else None
        if loc[1] == name:
            loc = (loc[0],) + loc[2:]
    return loc


def _expand_shorthand(raw: dict) -> None:
    """`data.train: file.tsv` means `data.train: {path: file.tsv}`; expanding it before
    overrides lets `--set data.train.limit=100` work on either spelling."""
    for section, key in DATA_SOURCES:
        parent = raw.get(section)
        if isinstance(parent, dict) and isinstance(parent.get(key), str):
            parent[key] = {"path": parent[key]}


def _dotted(loc: tuple) -> str:
    return ".".join(_short_repr(p)[1:-1] if isinstance(p, str) else str(p) for p in loc) or "(top level)"


MAX_LISTED_PROBLEMS = 50


def _first(problems: list[str]) -> list[str]:
    """The first problems, then a count: a generated recipe can have thousands of bad keys."""
    if len(problems) <= MAX_LISTED_PROBLEMS:
        return problems
    rest = len(problems) - MAX_LISTED_PROBLEMS
    return problems[:MAX_LISTED_PROBLEMS] + [f"... and {rest} more; fix these and validate again"]


def _describe(err: Mapping[str, Any], loc: tuple, raw: dict, model) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1], model)
        hint = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
        msg = "unknown key"
        if hint:
            return f"{msg}; did you mean '{hint[0]}'?"
        return f"{msg}; valid keys here: {', '.join(valid)}" if valid else msg
    if kind == "missing":
        return "required key is missing; add it"
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        from llmtune.methods.registry import all_methods

        names = sorted(all_methods())
        given = err.get("ctx", {}).get("tag")
        hint = difflib.get_close_matches(str(given), names, n=1) if given else []
        if kind == "union_tag_not_found":
            return f"`method.name` is missing; choose one of: {', '.join(names)}"
        extra = f"; did you mean '{hint[0]}'?" if hint else ""
        return f"unknown method {given!r}{extra} (see `llmtune methods`: {', '.join(names)})"
    if kind == "literal_error":
        return f"{err['msg'].lower()} (got {_short_repr(err.get('input'))})"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = err.get("input")
    if kind.endswith("_type") or kind.endswith("_parsing") or kind.startswith(("greater", "less")):
        return f"{msg[0].lower() + msg[1:]} (got {_short_repr(got)})"
    return msg[0].lower() + msg[1:]


def _short_repr(value: Any) -> str:
    """repr with bounded size: YAML aliases can nest a value into billions of items."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 80, 80
    return short.repr(value)


def _valid_keys(parent: tuple, recipe_cls) -> list[str]:
    model: Any = recipe_cls
    for part in parent:
        if part == "method" and model is recipe_cls:
            # recipe_model picked one method's options for any registered name; the union
            # means the name is missing or unknown, and `name` is the one key to fix.
            model = _one_method_config(recipe_cls)
            if model is None:
                return ["name"]
            continue
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        model = _inner_model(info.annotation)
        if model is None:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _inner_model(annotation: Any):
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def resolve_paths(recipe: RecipeBase, base_dir: Path) -> RecipeBase:
    """The recipe with every path it names made absolute, once: data files against the
    recipe's folder, and whatever paths the method's options hold (its `resolve_paths`).
    Later stages never see a relative path, nor need to know where the recipe was."""
    sections: dict[str, Any] = {}
    for section, key in DATA_SOURCES:
        parent = sections.get(section, getattr(recipe, section))
        src = getattr(parent, key)
        if src is not None and src.path is not None:
            absolute = str(resolve_data_path(src.path, base_dir))
            sections[section] = parent.model_copy(update={key: src.model_copy(update={"path": absolute})})
    retrieval = recipe.data.retrieval
    if retrieval is not None:
        data = sections.get("data", recipe.data)
        files = {key: str(resolve_data_path(getattr(retrieval, key), base_dir)) for key in RETRIEVAL_FILES}
        sections["data"] = data.model_copy(update={"retrieval": retrieval.model_copy(update=files)})
    store = recipe.eval.store
    if store and "://" not in store:  # a local store file; a server URI stays as given
        ev = sections.get("eval", recipe.eval)
        sections["eval"] = ev.model_copy(update={"store": str(resolve_data_path(store, base_dir))})
    sections["method"] = recipe.method.resolve_paths(base_dir)
    if is_run_dir(recipe.model.name):  # a finished run as the model: recorded by its absolute path
        absolute = str(Path(recipe.model.name).expanduser().absolute())
        sections["model"] = recipe.model.model_copy(update={"name": absolute})
    return recipe.model_copy(update=sections)


def _cross_checks(recipe: RecipeBase, written_by_llmtune: bool = False) -> list[Problem]:
    from llmtune.methods.registry import get_method

    problems: list[Problem] = []
    method = get_method(recipe.method.name)
    if recipe.data.task not in method.tasks:
        problems.append((("method", "name"),
                         f"method {recipe.method.name!r} does not train task {recipe.data.task!r} (data.task); "
                         f"it trains: {', '.join(sorted(method.tasks))}"))
    if written_by_llmtune:  # a run that trained a classifier: `llmtune eval` says prompting cannot score it
        return problems
    return problems + prompted_classifier_problems(recipe, method(recipe.method))
