"""One run's life, owned in one place: the run directory, manifest.json (checked on resume,
finished with what the run measured), metrics.jsonl, SIGINT/SIGTERM, divergence, and the
atomic final/. Every trainer runs inside it: llmtune's own loop (train/loop.py) and the
methods that train themselves (trl-backed ones, the linear probe). None of them writes
the manifest or final/.

Under several processes only the main one writes; the others train and stay silent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from llmtune.errors import TrainingDiverged, UserError
from llmtune.methods.job import Outcome
from llmtune.methods.registry import method_for
from llmtune.models.precision import precision_record
from llmtune.models.public_name import publish_base_name
from llmtune.models.task_model import write_info
from llmtune.train import manifest as mf
from llmtune.train.distributed import is_main_process
from llmtune.train.run_dir import RunDir, folder_bytes, open_run_dir, write_final, write_resolved_recipe
from llmtune.train.signals import StopRequested, signal_name

if TYPE_CHECKING:
    from llmtune.console import Reporter
    from llmtune.methods.base import Method
    from llmtune.recipe.load import LoadedRecipe
    from llmtune.recipe.schema import RecipeBase


def default_output(recipe: RecipeBase, recipe_path: Path | None) -> Path:
    if recipe.output.dir:
        try:
            out = Path(recipe.output.dir).expanduser()
        except RuntimeError as exc:  # `~someone/...` for a user this machine does not know
            raise UserError(f"output.dir {recipe.output.dir!r}: {exc}") from None
        return out if out.is_absolute() else Path.cwd() / out
    stem = recipe_path.stem if recipe_path else "run"
    return Path.cwd() / "runs" / stem


def run_recipe(loaded: LoadedRecipe, reporter: Reporter, *, output: Path | None = None, resume: bool = False,
               overwrite: bool = False, store_demos: Callable[..., list[list[int]]] | None = None) -> dict:
    """Train what a loaded recipe describes into its run directory; returns the result.
    `store_demos`: the `Job.store_demos` the command hands down (methods/job.py)."""
    recipe, recipe_path = loaded.recipe, loaded.path
    from llmtune.methods.parent_merge import provenance as parent_provenance
    from llmtune.models.gguf_cache import provenance as model_provenance
    from llmtune.train.tracking import check_installed, start_tracking

    out = (Path(output).expanduser() if output else default_output(recipe, recipe_path)).absolute()
    check_installed(recipe.train.report_to)  # a missing tracker package fails before anything is written
    if resume and not out.exists():
        raise UserError(f"--resume: {out} does not exist; there is no run to resume (drop --resume to start one)")
    if resume:
        finished = _finished_run_on_resume(out, recipe)
        if finished is not None:
            reporter.log(finished.pop("message"))
            return finished
    # GGUF-sourced models (file, hash, dequantized) are converted here, before a run directory
    # exists, so a missing package stops the run with nothing written.
    model_source = model_provenance(recipe.model.name)
    # A run named as the model is merged into a plain folder here too (its record: parent_run).
    parent_run = parent_provenance(recipe.model.name)
    main = is_main_process()
    if main:
        run = open_run_dir(out, resume=resume, overwrite=overwrite)
        write_resolved_recipe(run, recipe)
    else:
        run = RunDir(out)  # other ranks never write to the run directory
    reporter.log(f"run directory: {run.path}")
    session = RunSession(recipe, recipe_path, run, reporter, resume=resume, main=main)
    session.model_source = model_source
    session.parent_run = parent_run
    session.store_demos = store_demos
    run.tracker = start_tracking(recipe, run) if main else None
    try:
        return session.run(method_for(recipe.method))
    finally:
        if run.tracker is not None:
            run.tracker.finish()


def _finished_run_on_resume(out: Path, recipe: RecipeBase) -> dict | None:
    """--resume of a finished run trains only when the recipe asks for more steps than the
    run took and a checkpoint can continue it; otherwise nothing is written, final/ included.
    The same recipe again (a retried job, say) finds the run complete: its result, exit 0.
    Anything else would retrain part of the run (from its last checkpoint, which is before
    the last step unless save_every divides it) or all of it, and replace final/: that is
    --overwrite, and only --overwrite may do it. None: resume as usual."""
    from llmtune.train.checkpoint import complete_checkpoints

    run = RunDir(out)
    old = mf.read_manifest(run)
    if not old or old.get("status") != "finished":
        return None
    steps = old.get("steps", "?")
    # A finished run's final/ removed since is rebuilt by resuming, as a run that asks for more steps is.
    if run.final.is_dir() and not _asks_for_more_steps(recipe, old, run):
        if old.get("recipe_hash") == mf.recipe_hash(recipe):
            return {"steps": old.get("steps"), "train_seconds": old.get("train_seconds"),
                    "trainable_parameters": old.get("trainable_parameters"),
                    "total_parameters": old.get("total_parameters"), "eval": old.get("final_eval") or {},
                    "run_dir": str(out), "already_finished": True,
                    "message": f"--resume: {out} holds a finished run ({steps} steps) of this recipe; nothing "
                               f"left to train, nothing written. Raise train.max_steps (or train.epochs) to "
                               f"train it further, or pass --overwrite to train it again"}
        raise UserError(f"--resume: {out} holds a finished run ({steps} steps) and this recipe asks for no more "
                        f"steps, so resuming would only retrain its last steps with the changed recipe and "
                        f"replace its final/; pass --overwrite to retrain it, raise train.max_steps (or "
                        f"train.epochs) to train further, or --output elsewhere for a new run")
    if complete_checkpoints(run.checkpoints) or method_for(recipe.method).resumable_checkpoint(run.checkpoints):
        return None  # train further (or rebuild final/) from the last checkpoint
    raise UserError(f"--resume: {out} holds a finished run ({steps} steps) and no checkpoint to "
                    f"continue from, so resuming would train it again from step 0 and replace its final/; "
                    f"pass --overwrite to retrain it, or --output elsewhere for a new run")


def _asks_for_more_steps(recipe: RecipeBase, old: dict, run: RunDir) -> bool:
    """Whether `recipe` plans more optimizer steps than the finished run took. An epoch count
    is compared with the run's own recipe.yaml (its steps per epoch need the data to count)."""
    import yaml

    t, done = recipe.train, old.get("steps")
    if t.max_steps:
        return not isinstance(done, int) or t.max_steps > done
    try:
        before = (yaml.safe_load(run.recipe.read_text()) or {}).get("train") or {}
        if before.get("max_steps"):
            return True  # the step count now comes from the epochs and the data; let the run count it
        return t.epochs > float(before.get("epochs") or 0)
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError):
        return True  # no readable recipe to compare with: resume as before


class RunSession:
    """The run a trainer works in (it is the `Job` of llmtune.methods.job)."""

    def __init__(self, recipe: RecipeBase, recipe_path: Path | None, run: RunDir, reporter: Reporter, *,
                 resume: bool, main: bool):
        self.recipe, self.recipe_path, self.run_dir, self.reporter = recipe, recipe_path, run, reporter
        self.resume, self.main = resume, main
        self.checkpoints = run.checkpoints
        self.interactive = reporter.interactive
        self.manifest: dict | None = None
        self.model_source: dict | None = None
        self.parent_run: dict | None = None
        """The finished run `model.name` names (methods/parent_run.py), if it names one."""
        self.store_demos: Callable[..., list[list[int]]] | None = None
        self._stop: StopRequested | None = None
        self._started = time.perf_counter()
        self._train_started = self._started

    # -- the Job a trainer sees ---------------------------------------------------------
    def begin(self, manifest: dict, resumed_step: int = 0) -> None:
        r = self.recipe
        self.manifest = record = mf.build_manifest(self.recipe_path, r.train.seed, {
            "method": r.method.name, "task": r.data.task, "model": r.model.name, "recipe_hash": mf.recipe_hash(r),
            "status": "running", "precision": precision_record(r.model.dtype, r.train.precision),
            **({"model_source": self.model_source} if self.model_source else {}),
            **({"parent_run": self.parent_run} if self.parent_run else {}), **manifest})
        if "trainable_parameters" in manifest:
            record["trainable_percent"] = 100 * manifest["trainable_parameters"] / manifest["total_parameters"]
            self.reporter.log(f"method {r.method.name}: {manifest['trainable_parameters']:,} trainable of "
                              f"{manifest['total_parameters']:,} parameters "
                              f"({record['trainable_percent']:.3f}%)")
        if self.resume:
            self._check_resumed(record)
        if self.main:
            self.run_dir.drop_metrics_after(resumed_step)
            mf.write_manifest(self.run_dir, record)
        self._train_started = time.perf_counter()

    def log(self, record: dict) -> None:
        if self.main:
            self.run_dir.log_metrics(record)

    def stop_requested(self) -> int | None:
        return self._stop.signal if self._stop is not None else None

    # -- the run --------------------------------------------------------------------------
    def run(self, method: Method) -> dict:
        from llmtune.train.loop import fit as loop_fit

        with StopRequested() as stop:
            self._stop = stop
            try:
                outcome = method.fit(self) if method.trains_itself else loop_fit(self, method)
            except BaseException as exc:
                self._record_end("failed", f"{type(exc).__name__}: {exc}")
                raise
        if outcome.stopped_by:
            self._stopped(outcome, outcome.stopped_by)
        if outcome.diverged:
            self._diverged(outcome)
        return self._finish(method, outcome)

    def _check_resumed(self, record: dict) -> None:
        old = mf.read_manifest(self.run_dir)
        for warning in mf.manifest_changes(old, record):
            self.reporter.warn(warning)
        if old:
            record["resumes"] = old.get("resumes", []) + [record["created"]]
            record["created"] = old.get("created", record["created"])

    def _record_end(self, status: str, error: str | None = None, **measured: Any) -> None:
        """A run that began records how it ended (and what it measured); one that failed
        before it began leaves only its recipe.yaml (so the corrected command may reuse the folder)."""
        if self.manifest is None or not self.main:
            return
        self.manifest.update({**measured, "status": status, "error": error,
                              "wall_seconds": time.perf_counter() - self._started})
        mf.write_manifest(self.run_dir, self.manifest)

    def _stopped(self, outcome: Outcome, signum: int) -> NoReturn:
        name = signal_name(signum)
        where = outcome.last_checkpoint or self.checkpoints
        self._record_end("stopped", f"{name} at step {outcome.steps}")
        path = self.recipe_path or "RECIPE"
        default = self.recipe_path is not None and default_output(self.recipe, self.recipe_path) == self.run_dir.path
        out = "" if default else f" --output {self.run_dir.path}"
        self.reporter.log(f"{name}: stopped at step {outcome.steps}; checkpoint saved to {where}. "
                          f"Resume with: llmtune train {path}{out} --resume (repeat any --set options)")
        raise SystemExit(128 + signum)  # the shell's convention for "ended by signal N"

    def _diverged(self, outcome: Outcome) -> NoReturn:
        last = outcome.last_checkpoint
        keep = (f"The last good checkpoint is {last}; after changing the recipe, continue from it with "
                f"--resume, or start over with --overwrite." if last else
                "No checkpoint was written before it (set train.save_every to keep some).")
        message = f"training diverged: {outcome.diverged} {keep}"
        self._record_end("diverged", message)
        raise TrainingDiverged(message)

    def _finish(self, method: Method, outcome: Outcome) -> dict:
        from llmtune.evaluate.supervised import headline

        train_seconds = time.perf_counter() - self._train_started if outcome.train_seconds is None \
            else outcome.train_seconds
        final_eval = headline(outcome.eval)
        if self.main:
            write_final(self.run_dir, lambda folder: self._fill_final(folder, method, outcome))
            self._record_end("finished", **{
                "steps": outcome.steps, "train_seconds": train_seconds, "train_tokens": outcome.train_tokens,
                "tokens_per_second": outcome.train_tokens / max(train_seconds, 1e-9) if outcome.train_tokens
                else None, "peak_memory_mb": mf.peak_memory_mb(), "final_eval": final_eval,
                "eval_identity": self._eval_identity(outcome, final_eval),
                "artifact_bytes": folder_bytes(self.run_dir.final), **outcome.manifest})
        return {"steps": outcome.steps, "train_seconds": train_seconds,
                "trainable_parameters": outcome.trainable_parameters, "total_parameters": outcome.total_parameters,
                "eval": outcome.eval, "run_dir": str(self.run_dir.path)}

    def _fill_final(self, folder: Path, method: Method, outcome: Outcome) -> None:
        from llmtune.train.assemble import save_trained

        if outcome.save is not None:
            outcome.save(folder)
        else:
            save_trained(outcome.model, method, folder)
        publish_base_name(folder)  # a peft adapter names its base by its public name, not a local path
        outcome.tokenizer.save_pretrained(folder)
        r = self.recipe
        m = r.model
        write_info(folder, {
            "task": r.data.task, "method": method.name, "base_model": m.name,
            "model": {"name": m.name, "revision": m.revision, "trust_remote_code": m.trust_remote_code,
                      "dtype": m.dtype},
            "pooling": m.pooling if r.data.task == "classification" else None, "labels": None,
            "text_template": r.data.text_template if r.data.task == "classification" else None,
            "max_length": r.data.max_length, **outcome.info})

    def _eval_identity(self, outcome: Outcome, final_eval: dict) -> dict | None:
        """What the final metrics were measured on (data/eval_identity.py), so that runs are
        only ranked together when they were evaluated alike."""
        from llmtune.data.eval_identity import eval_identity, primary_metric

        if not final_eval:
            return None
        task = self.recipe.data.task
        metric = primary_metric(task, final_eval)
        return eval_identity(self.recipe, limit=outcome.eval_rows, metric=metric)
