"""PNG plots, drawn headless: matplotlib's Figure with the Agg canvas, never pyplot, so no
display and no global backend state are involved (matplotlib is imported inside functions).

Every figure is FIGSIZE at DPI, so a PNG is always WIDTH x HEIGHT pixels.
"""

from __future__ import annotations

from pathlib import Path

from llmtune.report.render import is_fraction

FIGSIZE = (8.0, 5.0)
DPI = 100
WIDTH, HEIGHT = int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI)


def _figure(rows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, list(axes)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _colour(i: int):
    from matplotlib import colormaps

    return colormaps["tab10"](i % 10)


# --- one run (llmtune report) ---------------------------------------------------------

def run_plots(records: list[dict], out: Path) -> dict[str, str]:
    """loss.png, lr.png and eval.png (one panel per eval metric) from metrics.jsonl records;
    a plot whose series has no points is not drawn."""
    files = {}
    train = [r for r in records if isinstance(r.get("loss"), (int, float))]
    if train:
        files["loss"] = str(_line_plot([r["step"] for r in train], [r["loss"] for r in train], "training loss",
                                       out / "loss.png"))
    lr = [r for r in records if isinstance(r.get("lr"), (int, float))]
    if lr:
        files["lr"] = str(_line_plot([r["step"] for r in lr], [r["lr"] for r in lr], "learning rate", out / "lr.png"))
    evals = _eval_series(records)
    if evals:
        files["eval"] = str(_eval_plot(evals, out / "eval.png"))
    return files


def _line_plot(x, y, label: str, path: Path) -> Path:
    fig, (ax,) = _figure()
    ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _eval_series(records: list[dict]) -> dict[str, tuple[list, list]]:
    series: dict[str, tuple[list, list]] = {}
    for r in records:
        for key, value in r.items():
            if key.startswith("eval_") and isinstance(value, float):
                xs, ys = series.setdefault(key[5:], ([], []))
                xs.append(r["step"])
                ys.append(value)
    return series


def _eval_plot(series: dict, path: Path) -> Path:
    names = list(series)[:4]  # the first four metrics keep the panels readable
    fig, axes = _figure(len(names))
    for ax, name in zip(axes, names):
        xs, ys = series[name]
        ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    return _save(fig, path)


# --- several runs (llmtune compare) ---------------------------------------------------

def compare_plots(table: dict, curves: dict[str, list[tuple[int, list[dict]]]], out: Path) -> dict[str, str]:
    """metric_vs_params.png, metric_vs_time.png, peak_memory.png and learning_curves.png.
    `curves`: row name -> [(seed, metrics.jsonl records)] for the learning curves."""
    rows = [r for r in table["rows"] if r["ranked"] and r["metric"]["mean"] is not None]
    files = {}
    if rows:
        files["metric_vs_params"] = str(_metric_vs(rows, table, "trainable_parameters", "params",
                                                   "trainable parameters", out / "metric_vs_params.png", log=True))
        files["metric_vs_time"] = str(_metric_vs(rows, table, "train_seconds", "time", "train time (s)",
                                                 out / "metric_vs_time.png", log=False))
    memory = [r for r in table["rows"] if r["ranked"] and r["peak_memory_mb"]["mean"] is not None]
    if memory:
        files["peak_memory"] = str(_memory_bars(memory, out / "peak_memory.png"))
    if any(any("loss" in rec for _, recs in runs for rec in recs) for runs in curves.values()):
        files["learning_curves"] = str(_curves(curves, out / "learning_curves.png"))
    return files


def _mean(row: dict, key: str):
    value = row[key]
    return value["mean"] if isinstance(value, dict) else value


def _metric_vs(rows, table, cost: str, flag: str, xlabel: str, path: Path, log: bool) -> Path:
    metric = table["metric"]
    scale = 100 if is_fraction(metric) else 1
    fig, (ax,) = _figure()
    front = []
    for i, row in enumerate(rows):
        x = _mean(row, cost)
        if x is None:
            continue
        y, err = row["metric"]["mean"] * scale, (row["metric"]["std"] or 0) * scale
        xerr = row[cost]["std"] if isinstance(row[cost], dict) and row[cost]["std"] else None
        on = flag in row["pareto"]
        ax.errorbar([x], [y], yerr=[err], xerr=None if xerr is None else [xerr], fmt="o" if not on else "D",
                    color=_colour(i), markersize=7 if on else 5, capsize=3, label=row["name"])
        ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        if on:
            front.append((x, y))
    if len(front) > 1:
        front.sort()
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", alpha=0.5,
                linestyle="--", label="Pareto front")
    if log:
        ax.set_xscale("symlog", linthresh=1)  # 0 trainable parameters (prompting) stays on the axis
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric}{' (%)' if scale == 100 else ''}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def _memory_bars(rows, path: Path) -> Path:
    fig, (ax,) = _figure()
    names = [r["name"] for r in rows]
    means = [r["peak_memory_mb"]["mean"] for r in rows]
    errs = [r["peak_memory_mb"]["std"] or 0 for r in rows]
    ax.barh(range(len(rows)), means, xerr=errs, color=[_colour(i) for i in range(len(rows))], capsize=3)
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("peak memory (MB)")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def _curves(curves: dict, path: Path) -> Path:
    fig, (ax,) = _figure()
    for i, (name, runs) in enumerate(curves.items()):
        for n, (_, recs) in enumerate(runs):
            points = [(r["step"], r["loss"]) for r in recs if isinstance(r.get("loss"), (int, float))]
            if points:
                ax.plot(*zip(*points), color=_colour(i), alpha=0.8, linewidth=1.2,
                        label=name if n == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)
