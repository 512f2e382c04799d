"""A finished run as the model of the next stage (`model.name: runs/sft`): the run's base with
what its method trained folded in (the method's own `load` and `merge`), saved once as a plain
model folder under `$LLMTUNE_CACHE/runs/<key>/` and loaded from there like any local model.

The key hashes final/'s files, the run's method section and its own base (recursively, when
the base is itself a run), so retraining a stage makes a new folder and never reuses a stale
one. The folder is written under a temporary name with its marker last and renamed into place
under a lock, as the GGUF cache does (models/gguf_cache.py): a kill never leaves a folder that
looks finished.

Only runs of methods that can merge and that hold a causal LM can start a stage: a soft prompt,
a prefix or a bottleneck adapter is not part of the base's weights, and a classifier or reward
model does not write text. `problem()` says so before anything loads (`llmtune validate`).

No torch at import: `llmtune.methods` registers `merged_folder` with models/run_source.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from llmtune.atomic import exclusive_lock
from llmtune.cache_root import cache_root
from llmtune.errors import UserError
from llmtune.models.run_source import is_run_dir

if TYPE_CHECKING:
    from llmtune.methods.base import Method

FORMAT = 1  # bump when a merged folder is written differently
MARKER = "llmtune-parent-run.json"
_memo: dict[tuple, Path] = {}


@dataclass(frozen=True)
class ParentRun:
    path: Path
    recipe: dict
    """The run's resolved recipe.yaml."""
    method: "Method"

    @property
    def task(self) -> str:
        return self.recipe["data"]["task"]

    @property
    def model(self) -> dict:
        return self.recipe["model"]

    @property
    def final(self) -> Path:
        return self.path / "final"

    def manifest(self) -> dict:
        try:
            return json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError):
            return {}


def read(run_dir: str | Path) -> ParentRun:
    from llmtune.methods.registry import get_method, method_for

    path = Path(run_dir).expanduser().absolute()
    try:
        recipe = yaml.safe_load((path / "recipe.yaml").read_text())
        config = get_method(recipe["method"]["name"]).Config.model_validate(recipe["method"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise UserError(f"model.name {str(run_dir)!r}: the run's recipe.yaml cannot be read back ({exc}); "
                        f"name a run that `llmtune train` finished") from None
    return ParentRun(path, recipe, method_for(config))


def problem(run_dir: str | Path) -> str | None:
    """Why this run cannot start another stage, or None."""
    from llmtune.methods.registry import all_methods

    parent = read(run_dir)
    name = parent.method.name
    writes_text = [n for n, m in sorted(all_methods().items()) if m.can_merge and n not in ("frozen-head",
                                                                                             "linear-probe", "reward")]
    works = (f"what works: a run of a method that merges into its base and writes text ({', '.join(writes_text)}), "
             f"or `llmtune export` this run and prompt it as it is")
    if not parent.method.can_merge:
        return (f"{parent.path} trained method {name!r}, which cannot be merged into its base weights (what it "
                f"learned is not part of them), so a later stage cannot start from it; {works}")
    kind = parent.method.result_kind(parent.task)
    if kind != "causal_lm":
        return f"{parent.path} holds a {kind} ({name} on {parent.task}), not a causal LM to train further; {works}"
    return None


def merged_folder(run_dir: Path) -> Path:
    """The plain model folder for a finished run (made on first use)."""
    parent = read(run_dir)
    reason = problem(parent.path)
    if reason is not None:
        raise UserError(f"model.name {str(run_dir)!r}: {reason}")
    memo = (str(parent.path), _final_stat(parent.final), str(cache_root()))
    if memo in _memo and _complete(_memo[memo]):
        return _memo[memo]
    key = run_key(parent)
    folder = cache_root() / "runs" / key
    if not _complete(folder):
        with exclusive_lock(folder.parent / f"{key}.lock"):
            if not _complete(folder):  # another process may have merged it while we waited
                _write(parent, key, folder)
    _memo[memo] = folder
    return folder


def run_key(parent: ParentRun) -> str:
    """32 hex digits naming what the merged folder holds: final/'s files, the method's options
    and the base (a base that is itself a run contributes its own key)."""
    base = parent.model["name"]
    digest = hashlib.sha256(json.dumps({"format": FORMAT, "method": parent.recipe["method"],
                                        "base": run_key(read(base)) if is_run_dir(base) else base},
                                       sort_keys=True).encode())
    for file in sorted(p for p in parent.final.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(parent.final)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]


def provenance(name: str) -> dict | None:
    """What a run records about a parent run it started from (None for any other model name)."""
    if not is_run_dir(name):
        return None
    parent = read(name)
    folder = merged_folder(parent.path)
    return {"run": str(parent.path), "method": parent.method.name, "task": parent.task,
            "base_model": parent.model["name"], "merged_folder": str(folder),
            "key": folder.name, "note": f"the base model is {parent.model['name']} with the {parent.method.name} "
                                        f"run's training merged in"}


def prompt_format(name: str) -> tuple[str, str | None] | None:
    """How a parent run rendered its prompts: ("chat" | "plain" | "text", its prompt template
    for "plain"); None when `name` is not a run."""
    if not is_run_dir(name):
        return None
    parent = read(name)
    manifest = parent.manifest()
    data = parent.recipe["data"]
    if isinstance(manifest.get("prompt_format"), dict):  # an RL run records what it rendered
        recorded = manifest["prompt_format"]
        return recorded["style"], recorded.get("template")
    style = (manifest.get("data_summary") or {}).get("prompt_style") or \
        ("plain" if data.get("prompt_style") == "plain" else "chat")
    return style, data.get("prompt_template") if style == "plain" else None


def recipe_prompt_format(recipe) -> tuple[str, str | None]:
    """How a recipe's text prompts (online RL) are rendered: data.prompt_style `chat` or `plain`
    as asked; `auto`: as the parent run rendered its prompts when model.name is a run, else
    the text as it is."""
    d = recipe.data
    if d.prompt_style == "chat":
        return "chat", None
    if d.prompt_style == "plain":
        return "plain", d.prompt_template
    return prompt_format(recipe.model.name) or ("text", None)


def _final_stat(final: Path) -> tuple:
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(final.rglob("*")) if p.is_file())


def _complete(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False



def _write(parent: ParentRun, key: str, folder: Path) -> None:
    from llmtune.console import Reporter

    log = Reporter().log
    for leftover in folder.parent.glob(f".{folder.name}.tmp-*"):  # a killed merge's (we hold the lock)
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    started = time.perf_counter()
    log(f"merging run {parent.path} ({parent.method.name}) into its base {parent.model['name']}, once: {folder}")
    try:
        _merge_into(parent, tmp)
        (tmp / MARKER).write_text(json.dumps({"format": FORMAT, "run": str(parent.path), "key": key,
                                              "method": parent.method.name, "base_model": parent.model["name"],
                                              "seconds": round(time.perf_counter() - started, 1)}, indent=2) + "\n")
        if folder.exists():  # a leftover without a marker: never used, so replace it
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _merge_into(parent: ParentRun, out: Path) -> None:
    """The base body, what the method saved put back onto it, folded in; saved with the run's
    tokenizer (its chat template included)."""
    from llmtune.models.load import load_body, load_tokenizer

    m = parent.model
    source = parent.method.body_source(m["name"], parent.final)
    body = load_body(m["name"], parent.task, trust_remote_code=m.get("trust_remote_code", False),
                     revision=m.get("revision"), dtype=m.get("dtype", "auto"),
                     source=None if source == m["name"] else source)
    body = parent.method.merge(parent.method.load(body, parent.final, causal=True))
    out.mkdir(parents=True)
    body.save_pretrained(out)
    load_tokenizer(str(parent.final)).save_pretrained(out)
