"""The arithmetic docs/methods.md answers its questions with (scripts/methods_figures.py):
the noise rule, the ICL/finetuning crossover and its range, and the break-even query count,
on synthetic `llmtune compare` documents (no model, no torch)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "methods_figures.py"


@pytest.fixture(scope="module")
def mf():
    spec = importlib.util.spec_from_file_location("methods_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stat(values):
    if not values:
        return {"mean": None, "std": None, "n": 0, "values": []}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return {"mean": mean, "std": std, "n": len(values), "values": values}


def row(name, accs, *, train_s=10.0, per_query=0.01):
    return {"name": name, "ranked": True, "metric": stat(accs), "trainable_parameters": 1000,
            "trainable_percent": 1.0, "train_seconds": stat([train_s] * len(accs)),
            "peak_memory_mb": stat([500.0] * len(accs)), "tokens_per_second": stat([]),
            "seconds_per_query": stat([per_query] * len(accs))}


def doc(rows, n_eval=100):
    return {"rows": rows, "eval_sets": {"A": {"rows": n_eval}}}


def test_spread_is_seed_std_or_binomial_error(mf):
    seeded = row("a", [0.70, 0.80, 0.90])
    assert mf.spread(seeded, 100) == pytest.approx(0.1)
    single = row("b", [0.8])
    assert mf.spread(single, 100) == pytest.approx(math.sqrt(0.8 * 0.2 / 100))
    same = row("c", [0.8, 0.8, 0.8])  # a closed-form fit: three identical seeds
    assert mf.spread(same, 400) == pytest.approx(math.sqrt(0.8 * 0.2 / 400))


def test_crossover_interpolates_in_log_n_and_brackets_it(mf):
    sizes = [8, 32, 128]
    rows = [row("icl-n0", [0.6], per_query=0.5)]
    rows += [row(f"icl-n{n}", [0.7], per_query=0.5) for n in sizes]
    lora = {8: [0.55, 0.60, 0.65], 32: [0.70, 0.75, 0.80], 128: [0.85, 0.90, 0.95]}
    rows += [row(f"lora-n{n}", v, train_s=20.0) for n, v in lora.items()]
    rows += [row(f"{m}-n{n}", [0.5, 0.5, 0.5]) for m in ("probe", "full") for n in sizes]
    q2 = mf.efficiency(doc(rows), sizes)
    c = q2["crossover"]["lora"]
    # Means: -0.10 at 8, +0.05 at 32: two thirds of the way from log 8 to log 32.
    assert c["estimate"] == pytest.approx(math.exp(math.log(8) + (0.10 / 0.15) * math.log(4)))
    assert c["earliest"] < c["estimate"] < c["latest"] <= 128
    assert c["first_clear_lead_at"] == 128  # +0.05 at 32 is within its spread
    assert not c["per_size"][32]["finding"] and c["per_size"][128]["finding"]
    assert q2["crossover"]["full"]["estimate"] is None  # never overtakes prompting
    cost = q2["cost"]["lora"][32]
    assert cost["break_even_queries"] == pytest.approx(20.0 / (0.5 - 0.01))


def test_q2_tables_read_back_from_json_keys(mf):
    import json

    sizes = [8]
    rows = [row("icl-n0", [0.6]), row("icl-n8", [0.7])]
    rows += [row(f"{m}-n8", [0.5, 0.6, 0.7]) for m in ("probe", "lora", "full")]
    q2 = mf.efficiency(doc(rows), sizes)
    text = mf.q2_tables(q2)
    assert text == mf.q2_tables(json.loads(json.dumps(q2)))
    assert "| 8 | 70.0 ± 4.6 | 60.0 ± 10.0 |" in text
