"""What the training benchmarks share: each case runs in its own process (so peak memory
is that case's alone), cases alternate in one sitting (llmtune, peer, llmtune, peer, ...)
so that drift in the machine's speed hits both, and every figure comes from the same
window of steps (after a warm-up) counted the same way: real (non-padding) tokens.

A worker prints one JSON line: {"tokens": real tokens in the timed window, "seconds": its
wall time, "steps": steps in it, "peak_mb": GPU max allocated (GPU) or null, "rss_mb": the
worker process's peak resident set (the operating system's accounting)}.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_worker(argv: list[str], env: dict | None = None, timeout: float = 3600) -> dict:
    """Start `python argv...`, wait, return its JSON line (and the wall time)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    wall = time.perf_counter() - start
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (err or out)[-1500:], "wall": wall}
    result = json.loads(lines[-1])
    result["wall"] = wall
    return result


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_peak_mb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def emit(result: dict) -> None:
    result.setdefault("rss_mb", peak_rss_mb())
    result.setdefault("peak_mb", gpu_peak_mb())
    print(json.dumps(result), flush=True)


def summarise(runs: list[dict]) -> dict:
    """Median over a case's repeats: tokens/s, step time (ms), peak memory (MiB)."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[-1].get("error", "?")}
    tps = [r["tokens"] / r["seconds"] for r in good]
    step = [1000 * r["seconds"] / r["steps"] for r in good]
    mem = [r["peak_mb"] if r.get("peak_mb") else r["rss_mb"] for r in good]
    return {"tokens_per_s": statistics.median(tps), "step_ms": statistics.median(step),
            "peak_mb": statistics.median(mem), "runs": len(good), "spread": (min(tps), max(tps))}


def machine() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
        threads = torch.get_num_threads()
    except ImportError:
        threads = "?"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {threads} torch threads, python {platform.python_version()}"


def table(rows: list[tuple[str, dict]], pairs: list[tuple[str, str]]) -> str:
    """Markdown: the figures of every case, then the ratios (case / baseline) last."""
    by_name = dict(rows)
    out = ["| case | tokens/s | step ms | peak MiB | runs |", "| --- | --- | --- | --- | --- |"]
    for name, s in rows:
        if "error" in s:
            last = (s["error"] or "?").strip().splitlines()[-1][:100]
            out.append(f"| {name} | error: {last} | | | |")
        else:
            out.append(f"| {name} | {s['tokens_per_s']:,.0f} | {s['step_ms']:.0f} | {s['peak_mb']:,.0f} | {s['runs']} |")
    out += ["", "| case | vs | tokens/s ratio | peak memory ratio |", "| --- | --- | --- | --- |"]
    for name, ref in pairs:
        a, b = by_name.get(name, {}), by_name.get(ref, {})
        if "tokens_per_s" in a and "tokens_per_s" in b:
            out.append(f"| {name} | {ref} | {a['tokens_per_s'] / b['tokens_per_s']:.2f}x | "
                       f"{a['peak_mb'] / b['peak_mb']:.2f}x |")
        else:
            out.append(f"| {name} | {ref} | n/a | n/a |")
    return "\n".join(out)
