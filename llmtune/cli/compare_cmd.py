"""`llmtune compare`: several runs (or recipes x seeds) side by side, as tables and plots."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def compare(
    paths: List[Path] = typer.Argument(..., help="Run directories; with --recipes, recipe files."),
    recipes: bool = typer.Option(False, "--recipes", help="The paths are recipes: run each one for every seed "
                                 "that has no finished run under OUT/runs/<recipe>-seed<N> (reusing finished "
                                 "ones), in this process, then compare."),
    seeds: str = typer.Option("0", "--seeds", help="Seeds for --recipes, comma-separated: 0,1,2 (train.seed; "
                              "eval.seed for a prompted recipe)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="With --recipes: override a key in every recipe "
                                             "(repeatable)."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Row (recipe or run name, or a method used "
                                           "by one row) the differences are taken against (default: the first)."),
    out: Path = typer.Option(Path("runs/compare"), "--out", help="Folder for table.md/.csv/.json, the plots and "
                             "(with --recipes) the runs."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    force: bool = typer.Option(False, "--force", help="Tabulate runs that were evaluated differently, or have "
                               "not finished, anyway; the table says so."),
) -> None:
    """Compare runs: method, the hyperparameters that differ, trainable parameters, artifact
    size, train time, tokens/s, peak memory, the primary metric as mean ± std over seeds,
    secondary metrics, the difference to a baseline row, Pareto flags and status (failed or
    diverged runs stay as rows with their error). Runs scored on different eval sets, label
    sets or metrics are refused (exit 2) unless --force."""
    from llmtune.cli.common import emit_json
    from llmtune.console import Reporter, quiet_third_party
    from llmtune.errors import UserError
    from llmtune.report.compare import compare_records, shown, write_outputs

    reporter = Reporter(json_mode=json_out)
    out = out.expanduser().absolute()
    if recipes:
        from llmtune.report.runner import plan, run_all

        planned = plan(list(paths), parse_seeds(seeds), set_ or [], out)
        _check_baseline(baseline, planned)
        quiet_third_party(reporter.interactive)
        records = run_all(planned, reporter)
        names = {p.run_dir: p.name for p in planned}
    else:
        _refuse_recipe_flags(paths, seeds, set_)
        from llmtune.report.run_record import read_runs

        records = read_runs(list(paths))
        names = None
    table = compare_records(records, names=names, baseline=baseline, force=force)
    files = write_outputs(table, records, out)
    reporter.log(f"compare: wrote {', '.join(shown(f) for f in files.values())}")
    if json_out:
        emit_json({**table, "files": files})
        return
    from llmtune.report.render import print_terminal

    print_terminal(table, f"compare: {table['metric']}")
    if not any(row["ranked"] for row in table["rows"]):
        raise UserError("no run finished, so nothing was ranked; the table lists each run's error")


def parse_seeds(text: str) -> list[int]:
    from llmtune.errors import UserError

    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {text!r}: give at least one seed, each once, e.g. 0,1,2")
    return seeds


def _refuse_recipe_flags(paths: list[Path], seeds: str, set_) -> None:
    from llmtune.errors import UserError

    files = [p for p in paths if p.is_file() and p.suffix in (".yaml", ".yml")]
    if files:
        raise UserError(f"{files[0]}: a recipe, not a run directory; pass --recipes to run recipes and compare them")
    if seeds != "0" or set_:
        raise UserError("--seeds and --set apply to --recipes only; run directories already have their seed")


def _check_baseline(baseline: str | None, planned) -> None:
    """Catch a misspelt --baseline before anything trains."""
    from llmtune.errors import UserError

    if baseline is None:
        return
    known = {p.name for p in planned} | {p.loaded.recipe.method.name for p in planned if p.loaded}
    if baseline not in known:
        raise UserError(f"--baseline {baseline}: no recipe or method by that name; recipes: "
                        f"{', '.join(sorted({p.name for p in planned}))}")


def register(app: typer.Typer) -> None:
    app.command("compare", short_help="Compare runs side by side: cost, score, Pareto front.")(compare)
