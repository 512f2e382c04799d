"""`llmtune compare --recipes`: run every (recipe, seed) that has no finished run yet, in this
process, and return one RunRecord per pair (failures included, as records with their error).

Run directories: OUT/runs/<recipe file stem>-seed<N>. A directory is reused when its run
finished with the same recipe hash (the resolved recipe with the seed and every --set
applied); resumed when it stopped part way (status running or stopped) with the same hash;
run again from scratch (--overwrite) when it failed, diverged, has another hash or records
none. The recipes' own output.dir is not used.

Seeds: `train.seed=N` for a recipe that trains. A prompted classification recipe (eval.shots,
eval.templates or eval.verbalizers set: in-context learning, nothing to train) is evaluated
instead, with `eval.seed=N`; compare writes its directory itself: recipe.yaml, eval.json and
a manifest.json with the same keys as a trained run (method `in-context`, 0 trainable
parameters, train_seconds 0, artifact_bytes 0, eval_seconds for the per-query cost).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from llmtune.errors import TrainingDiverged, UserError
from llmtune.report.memory import reset_peak_memory
from llmtune.report.run_record import RunRecord, read_run

IN_CONTEXT = "in-context"


@dataclass
class Planned:
    recipe: Path
    seed: int
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    loaded: object | None = None
    load_error: str | None = None

    @property
    def name(self) -> str:
        return self.recipe.stem

    @property
    def in_context(self) -> bool:
        return self.loaded is not None and is_in_context(self.loaded.recipe)


def is_in_context(recipe) -> bool:
    """A prompted classification recipe: `llmtune eval` scores it by prompting; nothing trains."""
    return recipe.eval.prompting and recipe.data.task == "classification"


def run_dir_for(out: Path, recipe: Path, seed: int) -> Path:
    return out / "runs" / f"{recipe.stem}-seed{seed}"


def plan(recipes: list[Path], seeds: list[int], overrides: list[str], out: Path) -> list[Planned]:
    """Load every (recipe, seed) up front, so a broken recipe is known before anything runs."""
    from llmtune.recipe import load_recipe

    _check_recipe_paths(recipes)
    planned = []
    for recipe in recipes:
        for seed in seeds:
            p = Planned(recipe=recipe, seed=seed, run_dir=run_dir_for(out, recipe, seed))
            try:
                p.overrides = [*overrides, f"train.seed={seed}"]
                p.loaded = load_recipe(recipe, p.overrides)
                if is_in_context(p.loaded.recipe):
                    p.overrides = [*overrides, f"eval.seed={seed}"]
                    p.loaded = load_recipe(recipe, p.overrides)
            except UserError as exc:
                p.loaded, p.load_error = None, exc.render()
            planned.append(p)
    return planned


def _check_recipe_paths(recipes: list[Path]) -> None:
    problems = [f"{r}: no such recipe file" for r in recipes if not Path(r).is_file()]
    stems: dict[str, Path] = {}
    for r in recipes:
        if r.stem in stems and Path(r).resolve() != stems[r.stem].resolve():
            problems.append(f"{stems[r.stem]} and {r}: two recipes named {r.stem!r} would share run directories "
                            f"(OUT/runs/{r.stem}-seedN); rename one")
        stems.setdefault(r.stem, Path(r))
    if problems:
        raise UserError("--recipes: cannot plan the runs", problems)
    if len({Path(r).resolve() for r in recipes}) != len(recipes):
        raise UserError("--recipes: a recipe is listed twice; list each once")


def decide(p: Planned) -> tuple[str, str]:
    """(action, why): reuse, resume, overwrite or fresh."""
    from llmtune.train.manifest import recipe_hash

    if not p.run_dir.exists() or not any(p.run_dir.iterdir()):
        return "fresh", "no run yet"
    try:
        rec = read_run(p.run_dir)
    except UserError:
        return "fresh", "no run recorded there yet"  # only recipe.yaml; open_run_dir refuses anything else
    wanted = recipe_hash(p.loaded.recipe)
    if rec.get("recipe_hash") != wanted:
        why = "its manifest records no recipe hash" if rec.get("recipe_hash") is None else "the recipe changed"
        return "overwrite", f"{why}; running it again"
    if rec.complete:
        return "reuse", "finished earlier with the same recipe"
    if rec.unfinished and not p.in_context:
        return "resume", f"{rec.status}: continuing it"
    return "overwrite", f"{rec.status} earlier; running it again"


def run_all(planned: list[Planned], reporter) -> list[RunRecord]:
    actions = [("failed", p.load_error) if p.load_error else decide(p) for p in planned]
    counts = {a: sum(1 for x, _ in actions if x == a) for a in ("reuse", "resume", "overwrite", "fresh", "failed")}
    reporter.log(f"compare: {len(planned)} runs: {counts['reuse']} finished earlier (reused), {counts['resume']} "
                 f"to resume, {counts['fresh'] + counts['overwrite']} to run, {counts['failed']} with a broken recipe")
    records = []
    for i, (p, (action, why)) in enumerate(zip(planned, actions), 1):
        tag = f"[{i}/{len(planned)}] {p.name} seed {p.seed}"
        if action == "failed":
            reporter.log(f"{tag}: recipe error, not run")
            records.append(RunRecord(path=p.run_dir, manifest={"seed": p.seed}, status_override="failed",
                                     error_override=p.load_error))
            continue
        if action == "reuse":
            reporter.log(f"{tag}: {why}")
            records.append(read_run(p.run_dir))
            continue
        reporter.log(f"{tag}: {why} -> {p.run_dir}")
        records.append(execute(p, action, reporter))
    return records


def execute(p: Planned, action: str, reporter) -> RunRecord:
    """Run (or evaluate) one planned pair; an error becomes the record's status, never an exit."""
    from llmtune.train.session import run_recipe

    reset_peak_memory()
    status = error = None
    try:
        if p.in_context:
            evaluate_in_context(p, reporter, overwrite=action == "overwrite")
        else:
            run_recipe(p.loaded, reporter, output=p.run_dir, resume=action == "resume",
                       overwrite=action == "overwrite")
    except TrainingDiverged as exc:
        status, error = "diverged", str(exc)
    except UserError as exc:
        status, error = "failed", exc.render()
    except Exception as exc:  # a crash in one run must not lose the others
        traceback.print_exc()
        status, error = "failed", f"crashed: {type(exc).__name__}: {exc}"
    if error:
        reporter.warn(f"{p.name} seed {p.seed} {status}: {error.splitlines()[0]}")
    try:
        rec = read_run(p.run_dir)
    except UserError:
        rec = RunRecord(path=p.run_dir, manifest={"seed": p.seed})
    if error:
        recorded = rec.manifest.get("status")
        rec.status_override = recorded if recorded in ("failed", "diverged") else status
        rec.error_override = None if rec.manifest.get("error") else error
    return rec


def evaluate_in_context(p: Planned, reporter, overwrite: bool) -> None:
    """Score a prompted recipe and write its run directory (recipe.yaml, eval.json, manifest.json)."""
    from llmtune.index.demos import select_from_store
    from llmtune.runs.evaluate import evaluate_target
    from llmtune.evaluate.supervised import headline
    from llmtune.data.eval_identity import eval_identity
    from llmtune.train.manifest import build_manifest, peak_memory_mb, recipe_hash, write_manifest
    from llmtune.train.run_dir import open_run_dir, write_resolved_recipe

    r = p.loaded.recipe
    run = open_run_dir(p.run_dir, resume=False, overwrite=overwrite)
    write_resolved_recipe(run, r)
    manifest = build_manifest(p.loaded.path, r.eval.seed, {
        "status": "running", "error": None, "method": IN_CONTEXT, "task": r.data.task, "model": r.model.name,
        "recipe_hash": recipe_hash(r), "trainable_parameters": 0, "total_parameters": None,
        "trainable_percent": 0.0, "train_seconds": 0.0, "train_tokens": 0, "tokens_per_second": None,
        "artifact_bytes": 0, "eval_identity": eval_identity(r),
    })
    write_manifest(run, manifest)
    started = time.perf_counter()
    try:
        result = evaluate_target(p.recipe, p.overrides, None, reporter, store_demos=select_from_store)
    except BaseException as exc:  # recorded in the manifest as the session does for a trained run
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        manifest.update({"status": "stopped" if interrupted else "failed",
                         "error": exc.render() if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}",
                         "wall_seconds": time.perf_counter() - started})
        write_manifest(run, manifest)
        raise
    wall = time.perf_counter() - started
    _write_json(run.path / "eval.json", result)
    manifest.update({"status": "finished", "wall_seconds": wall,
                     "eval_seconds": result.get("prompt_seconds", wall), "peak_memory_mb": peak_memory_mb(),
                     "final_eval": headline(result), "prompting": result.get("prompting")})
    write_manifest(run, manifest)


def _write_json(path: Path, obj) -> None:
    import json
    import os

    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)
