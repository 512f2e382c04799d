"""`llmtune compare --recipes`: run every (recipe, seed) that has no finished run yet, in this
process, and return one RunRecord per pair (failures included, as records with their error).

Run directories: OUT/runs/<recipe file stem>-seed<N>. A directory is reused when its run
finished with the same recipe hash (the resolved recipe with the seed and every --set
applied); resumed when it stopped part way (status running or stopped) with the same hash;
run again from scratch (--overwrite) when it failed, diverged, has another hash or records
none. The recipes' own output.dir is not used.

Seeds: `train.seed=N` and `eval.seed=N` (the draw of random demonstrations and of the
template-selection rows, which is all the randomness an `in-context` recipe has).

Every recipe runs through `train.session.run_recipe`, prompted (`method: in-context`) ones
included: compare only plans, runs and reads run directories; it writes none itself.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

from llmtune.errors import TrainingDiverged, UserError
from llmtune.report.memory import reset_peak_memory
from llmtune.report.run_record import RunRecord, read_run


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
                p.overrides = [*overrides, f"train.seed={seed}", f"eval.seed={seed}"]
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
    if rec.unfinished:
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
    from llmtune.index.demos import select_from_store
    from llmtune.train.session import run_recipe

    reset_peak_memory()
    status = error = None
    try:
        run_recipe(p.loaded, reporter, output=p.run_dir, resume=action == "resume",
                   overwrite=action == "overwrite", store_demos=select_from_store)
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
