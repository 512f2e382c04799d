"""Run a loaded recipe: open the run directory, record the recipe, hand over to the method."""

from __future__ import annotations

from pathlib import Path

from llmtune.console import Reporter
from llmtune.errors import UserError
from llmtune.recipe.load import LoadedRecipe
from llmtune.train.context import RunContext
from llmtune.train.distributed import is_main_process
from llmtune.train.run_dir import RunDir, open_run_dir, write_resolved_recipe


def default_output(loaded: LoadedRecipe) -> Path:
    if loaded.recipe.output.dir:
        try:
            out = Path(loaded.recipe.output.dir).expanduser()
        except RuntimeError as exc:  # `~someone/...` for a user this machine does not know
            raise UserError(f"output.dir {loaded.recipe.output.dir!r}: {exc}") from None
        return out if out.is_absolute() else Path.cwd() / out
    stem = loaded.path.stem if loaded.path else "run"
    return Path.cwd() / "runs" / stem


def run_recipe(loaded: LoadedRecipe, reporter: Reporter, *, output: Path | None = None, resume: bool = False,
               overwrite: bool = False) -> dict:
    from llmtune.methods.registry import get_method
    from llmtune.models.gguf_cache import provenance as model_provenance

    out = (Path(output).expanduser() if output else default_output(loaded)).absolute()
    if resume and not out.exists():
        raise UserError(f"--resume: {out} does not exist; there is no run to resume (drop --resume to start one)")
    source = model_provenance(loaded.recipe.model.name)  # GGUF-sourced models: file, hash, dequantized
    if is_main_process():
        run = open_run_dir(out, resume=resume, overwrite=overwrite)
        write_resolved_recipe(run, loaded.recipe, loaded.base_dir)
    else:
        # Other ranks never write to the run directory; the main one checks and creates it.
        run = RunDir(out)
    method = get_method(loaded.recipe.method.name)(loaded.recipe.method)
    reporter.log(f"run directory: {run.path}")
    ctx = RunContext(loaded=loaded, run=run, reporter=reporter, resume=resume,
                     manifest_extra={"model_source": source} if source else {})
    return method.fit(ctx)
