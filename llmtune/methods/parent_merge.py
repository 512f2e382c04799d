"""The merged model folder of a finished run that starts the next stage (`model.name: runs/sft`):
the run's base with what its method trained folded in (the method's own `load` and `merge`),
saved once as a plain model folder under `$LLMTUNE_CACHE/runs/<key>/` and loaded from there
like any local model. Reading the run and whether it can start a stage: methods/parent_run.py.

The key hashes final/'s files, the run's method section and its own base (recursively, when
the base is itself a run), so retraining a stage makes a new folder and never reuses a stale
one. The folder is written under a temporary name with its marker last and renamed into place
under a lock, as the GGUF cache does (models/gguf_cache.py): a kill never leaves a folder that
looks finished.

No torch at import: recipe/load.py registers `merged_folder` with models/run_source.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from llmtune.atomic import exclusive_lock, replacing_folder
from llmtune.cache_root import cache_root
from llmtune.errors import UserError
from llmtune.methods.parent_run import ParentRun, problem, read
from llmtune.models.run_source import is_run_dir

FORMAT = 1  # bump when a merged folder is written differently
MARKER = "llmtune-parent-run.json"
_memo: dict[tuple, Path] = {}


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
    started = time.perf_counter()
    log(f"merging run {parent.path} ({parent.method.name}) into its base {parent.model['name']}, once: {folder}")
    # An existing folder here lacks the marker (never used), so it is replaced.
    with replacing_folder(folder) as tmp:
        _merge_into(parent, tmp)
        (tmp / MARKER).write_text(json.dumps({"format": FORMAT, "run": str(parent.path), "key": key,
                                              "method": parent.method.name, "base_model": parent.model["name"],
                                              "seconds": round(time.perf_counter() - started, 1)}, indent=2) + "\n")


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
