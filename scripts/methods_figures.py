"""The numbers and figures docs/methods.md answers its three questions with, read from the
JSON documents `llmtune compare` printed (see compare_methods.py).

A difference counts only when it is larger than its seed spread: sqrt(std_a² + std_b²) for
two seeded rows; for deterministic rows (nearest-neighbour prompting, the closed-form linear
probe) the binomial standard error of an accuracy on the eval set stands in for the std.
"""

from __future__ import annotations

import math
from pathlib import Path

SIZE, DPI = (9.0, 4.5), 100


def rows_by_name(doc: dict | None) -> dict[str, dict]:
    return {row["name"]: row for row in (doc or {}).get("rows", []) if row["ranked"]}


def eval_rows(doc: dict) -> int | None:
    for identity in (doc or {}).get("eval_sets", {}).values():
        return identity.get("rows")
    return None


def spread(row: dict, n_eval: int | None) -> float | None:
    """The seed std, or for a row without one (a single or deterministic run, or seeds that
    agree exactly) the binomial standard error of its accuracy."""
    m = row["metric"]
    if m["std"] and m["std"] > 1e-9:  # identical seeds give a std of ~1e-16, not always 0
        return m["std"]
    if m["mean"] is None or not n_eval:
        return m["std"]
    return math.sqrt(m["mean"] * (1 - m["mean"]) / n_eval)


def _point(row: dict | None, n_eval: int | None) -> dict | None:
    if row is None or row["metric"]["mean"] is None:
        return None
    return {"mean": row["metric"]["mean"], "spread": spread(row, n_eval), "seeds": len(row["metric"]["values"]),
            "trainable": row["trainable_parameters"], "trainable_percent": row["trainable_percent"],
            "train_seconds": row["train_seconds"]["mean"], "peak_memory_mb": row["peak_memory_mb"]["mean"],
            "tokens_per_second": row["tokens_per_second"]["mean"], "seconds_per_query": row["seconds_per_query"]["mean"]}


def _versus(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None:
        return None
    diff = a["mean"] - b["mean"]
    noise = math.hypot(a["spread"] or 0, b["spread"] or 0)
    return {"difference": diff, "spread": noise, "finding": abs(diff) > noise}


def analysis(docs: dict, vts: list[int], ranks: list[int], sizes: list[int]) -> dict:
    out = {}
    if "q1" in docs:
        rows, n = rows_by_name(docs["q1"]), eval_rows(docs["q1"])
        out["q1"] = {m: {v: _point(rows.get(f"sst2-{m}-vt{v}"), n) for v in vts} for m in ("prefix", "soft-prompt")}
        out["q1"]["prefix_minus_soft"] = {v: _versus(out["q1"]["prefix"][v], out["q1"]["soft-prompt"][v]) for v in vts}
    if "q3" in docs:
        rows, n = rows_by_name(docs["q3"]), eval_rows(docs["q3"])
        full = _point(rows.get("sst2-full"), n)
        out["q3"] = {"full": full, **{f"r{r}": _point(rows.get(f"sst2-lora-r{r}"), n) for r in ranks}}
        out["q3"]["minus_full"] = {f"r{r}": _versus(out["q3"][f"r{r}"], full) for r in ranks}
    if "q2" in docs:
        out["q2"] = efficiency(docs["q2"], sizes)
    if "agnews" in docs:
        rows, n = rows_by_name(docs["agnews"]), eval_rows(docs["agnews"])
        out["agnews"] = {name: _point(row, n) for name, row in rows.items()}
    return out


def efficiency(doc: dict, sizes: list[int]) -> dict:
    rows, n_eval = rows_by_name(doc), eval_rows(doc)
    curves = {m: {n: _point(rows.get(f"{m}-n{n}"), n_eval) for n in sizes} for m in ("probe", "lora", "full")}
    if any(name.startswith("smollm2-lora-n") for name in rows):
        curves["smollm2-lora"] = {n: _point(rows.get(f"smollm2-lora-n{n}"), n_eval) for n in sizes}
    icl = {n: _point(rows.get(f"icl-n{n}"), n_eval) for n in [0, *sizes]}
    result = {"eval_rows": n_eval, "curves": curves, "icl": icl}
    if any(icl.values()):
        result["crossover"] = {m: crossover(sizes, curves[m], icl) for m in curves}
        result["cost"] = {m: cost(curves[m], icl, sizes) for m in curves}
    return result


def crossover(sizes: list[int], curve: dict, icl: dict) -> dict:
    """Where finetuning overtakes prompting, interpolated in log n between measured sizes:
    the estimate from the means, and a range from the curves moved by one spread either way
    (finetuning's seed std and prompting's standard error, combined)."""
    pairs = [(n, _versus(curve.get(n), icl.get(n))) for n in sizes]
    pairs = [(n, v) for n, v in pairs if v is not None]

    def first_cross(shift: float) -> float | None:
        prev = None
        for n, v in pairs:
            d = v["difference"] + shift * v["spread"]
            if d > 0:
                if prev is None:
                    return float(n) if n == pairs[0][0] else None
                (n0, d0) = prev
                return math.exp(math.log(n0) + (0 - d0) / (d - d0) * (math.log(n) - math.log(n0)))
            prev = (n, d)
        return None

    first_clear = next((n for n, v in pairs if v["finding"] and v["difference"] > 0), None)
    return {"per_size": dict(pairs), "estimate": first_cross(0.0), "earliest": first_cross(1.0),
            "latest": first_cross(-1.0), "first_clear_lead_at": first_clear,
            "at_or_below_smallest": bool(pairs and pairs[0][1]["difference"] > 0)}


def cost(curve: dict, icl: dict, sizes: list[int]) -> dict:
    """Prompting pays per query; finetuning pays once (train_seconds) and then its own, smaller
    per-query cost. Break-even = train seconds / (prompt s per query - finetuned s per query)."""
    out = {}
    for n in sizes:
        ft, pr = curve.get(n), icl.get(n)
        if not ft or not pr:
            continue
        extra = None if pr["seconds_per_query"] is None or ft["seconds_per_query"] is None else \
            pr["seconds_per_query"] - ft["seconds_per_query"]
        out[n] = {"train_seconds": ft["train_seconds"], "finetuned_s_per_query": ft["seconds_per_query"],
                  "prompted_s_per_query": pr["seconds_per_query"],
                  "break_even_queries": ft["train_seconds"] / extra if extra and extra > 0 and ft["train_seconds"]
                  else None}
    return out


# --- figures -------------------------------------------------------------------------

def _figure(cols: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, cols, squeeze=False)[0])


def _series(ax, xs, points, label, **style):
    kept = [(x, p) for x, p in zip(xs, points) if p]
    if not kept:
        return
    ax.errorbar([x for x, _ in kept], [100 * p["mean"] for _, p in kept],
                yerr=[100 * (p["spread"] or 0) for _, p in kept], capsize=3, marker="o", label=label, **style)


def draw_figures(docs: dict, result: dict, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if "q1" in result:
        written.append(_q1(result["q1"], folder / "q1_virtual_tokens.png"))
    if "q2" in result:
        written.append(_q2(result["q2"], folder / "q2_data_efficiency.png"))
    if "q3" in result:
        written.append(_q3(result["q3"], folder / "q3_lora_rank.png"))
    return written


def _plain_ticks(ax, values) -> None:
    """The measured values as ticks on a log axis (not 2 x 10^0)."""
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()


def _q1(q1: dict, path: Path) -> str:
    fig, (acc, secs) = _figure(2)
    for method, style in (("prefix", {"color": "tab:blue"}), ("soft-prompt", {"color": "tab:orange"})):
        vts = sorted(q1[method])
        _series(acc, vts, [q1[method][v] for v in vts], method, **style)
        kept = [(v, q1[method][v]) for v in vts if q1[method][v]]
        secs.plot([v for v, _ in kept], [p["train_seconds"] for _, p in kept], marker="o", label=method, **style)
    acc.set(xlabel="virtual tokens", ylabel="accuracy (%)", xscale="log", title="SST-2 dev accuracy")
    secs.set(xlabel="virtual tokens", ylabel="train seconds", xscale="log", title="training time")
    ticks = sorted({v for method in ("prefix", "soft-prompt") for v in q1[method]})
    for ax in (acc, secs):
        _plain_ticks(ax, ticks)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=DPI)
    return str(path)


def _q2(q2: dict, path: Path) -> str:
    fig, (ax,) = _figure(1)
    sizes = sorted(next(iter(q2["curves"].values())))
    for method, colour in (("probe", "tab:green"), ("lora", "tab:blue"), ("full", "tab:red"),
                           ("smollm2-lora", "tab:brown")):
        if method in q2["curves"]:
            label = "LoRA (SmolLM2-135M)" if method == "smollm2-lora" else f"{method} (MiniLM)"
            _series(ax, sizes, [q2["curves"][method][n] for n in sizes], label, color=colour)
    if any(q2["icl"].values()):
        ns = sorted(q2["icl"])
        _series(ax, ns, [q2["icl"][n] for n in ns], "in-context (SmolLM2-135M)", color="tab:purple", linestyle="--")
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":", label="chance")
    ax.set_xscale("symlog", linthresh=8)
    ticks = sorted({0, *sizes})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set(xlabel="labelled examples", ylabel="accuracy (%)",
           title=f"SST-2, first {q2['eval_rows']} dev sentences (bars: seed std, or standard error)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=DPI)
    return str(path)


def _q3(q3: dict, path: Path) -> str:
    fig, (acc, mem) = _figure(2)
    ranks = sorted(int(k[1:]) for k in q3 if k.startswith("r") and q3[k])
    _series(acc, ranks, [q3[f"r{r}"] for r in ranks], "LoRA", color="tab:blue")
    full = q3.get("full")
    if full:
        lo, hi = 100 * (full["mean"] - (full["spread"] or 0)), 100 * (full["mean"] + (full["spread"] or 0))
        acc.axhspan(lo, hi, color="tab:red", alpha=0.2, label="full finetuning (± spread)")
        mem.axhline(full["peak_memory_mb"] or 0, color="tab:red", linestyle="--", label="full finetuning")
    mem.plot(ranks, [q3[f"r{r}"]["peak_memory_mb"] for r in ranks], marker="o", color="tab:blue", label="LoRA")
    acc.set(xlabel="LoRA rank", ylabel="accuracy (%)", xscale="log", title="SST-2 dev accuracy")
    mem.set(xlabel="LoRA rank", ylabel="peak memory (MB)", xscale="log", title="peak memory")
    for ax in (acc, mem):
        _plain_ticks(ax, ranks)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=DPI)
    return str(path)


# --- compact tables for the docs ---------------------------------------------------------

def doc_table(doc: dict) -> str:
    """The columns docs/methods.md quotes from one `llmtune compare` JSON document (the full
    table, with every differing hyperparameter, is OUT/<group>/table.md)."""
    from llmtune.report.render import fmt_bytes, fmt_count, fmt_delta, fmt_percent, fmt_score, fmt_stat

    metric = doc["metric"]
    head = ["row", "method", "seeds", "trainable", "% of model", "artifact", "train s", "peak MB", "s/query",
            f"{metric} %", f"Δ vs {doc['baseline']}", "pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in doc["rows"]:
        if not row["ranked"]:
            lines.append(f"| {row['name']} | {row['method']} | – | {row['status']}: {row.get('error') or ''} |")
            continue
        spq = row["seconds_per_query"]
        cells = [row["name"], row["method"], ",".join(map(str, row["seeds"])), fmt_count(row["trainable_parameters"]),
                 fmt_percent(row["trainable_percent"]), fmt_bytes(row["artifact_bytes"]),
                 fmt_stat(row["train_seconds"], 1), fmt_stat(row["peak_memory_mb"]),
                 "–" if spq["mean"] is None else f"{spq['mean']:.3f}", fmt_score(row["metric"], metric),
                 "baseline" if row["name"] == doc["baseline"] else fmt_delta(row["delta"], metric),
                 ", ".join(row["pareto"]) or "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct(p: dict | None) -> str:
    if not p:
        return "–"
    spread = "" if p["spread"] is None else f" ± {100 * p['spread']:.1f}"
    return f"{100 * p['mean']:.1f}{spread}"


def _n(x) -> str:
    return "–" if x is None else f"{x:,.0f}"


def _by_int(d: dict) -> dict:
    """Keys as ints again (summary.json read back has them as strings)."""
    return {int(k): v for k, v in d.items()}


def q2_tables(q2: dict) -> str:
    """Question 2 for the docs: accuracy by labelled examples, the crossovers, the costs."""
    q2 = {**q2, "icl": _by_int(q2["icl"]), "curves": {m: _by_int(c) for m, c in q2["curves"].items()},
          "cost": {m: _by_int(c) for m, c in q2.get("cost", {}).items()}}
    methods = [m for m in ("probe", "lora", "full", "smollm2-lora") if m in q2["curves"]]
    sizes = sorted(q2["icl"])
    head = ["labelled examples n", "in-context (SmolLM2)", *methods]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for n in sizes:
        lines.append(f"| {n:,} | {_pct(q2['icl'].get(n))} | "
                     + " | ".join(_pct(q2["curves"][m].get(n)) for m in methods) + " |")
    out = "\n".join(lines) + "\n"
    if "crossover" in q2:
        lines = ["", "| finetuned method | crossover n (means) | range (± one spread) | first n with a lead "
                 "beyond the spread |", "| --- | --- | --- | --- |"]
        for m in methods:
            c = q2["crossover"][m]
            lines.append(f"| {m} | {_n(c['estimate'])} | {_n(c['earliest'])} to {_n(c['latest'])} | "
                         f"{_n(c['first_clear_lead_at'])} |")
        lines += ["", "| n | method | train s (once) | finetuned s/query | in-context s/query | break-even queries |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for m in methods:
            for n, c in q2["cost"][m].items():
                f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
                lines.append(f"| {int(n):,} | {m} | {c['train_seconds']:.1f} | {f(c['finetuned_s_per_query'])} | "
                             f"{f(c['prompted_s_per_query'])} | {_n(c['break_even_queries'])} |")
        out += "\n".join(lines) + "\n"
    return out
