"""Export one run to GGUF in every weight type and print what the parity check measured:
the figures behind the per-type tolerances in llmtune/runs/gguf_parity.py (docs/using.md).

    python scripts/gguf_parity_table.py RUN_DIR [RUN_DIR...] --out /tmp/gguf-table [--json]

Each export goes through `llmtune.runs.export_gguf.export_gguf` exactly as the CLI runs it,
with the drift tolerance lifted (to infinity) so every type is written and measured instead
of stopping at the first one over its limit. The conversion check keeps its tolerance.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (replaced)")
    parser.add_argument("--types", default="f32,f16,bf16,q8_0,q5_1,q5_0,q4_1,q4_0")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from llmtune.console import Reporter
    from llmtune.runs import gguf_parity
    from llmtune.runs.export_gguf import export_gguf

    for quant in gguf_parity.TOLERANCES:
        gguf_parity.TOLERANCES[quant] = float("inf")  # measure every type; see the docstring
    rows = []
    for run in args.runs:
        for quant in args.types.split(","):
            out = args.out / f"{run.name}-{quant}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            result = export_gguf(run, out, quant=quant, overwrite=False, reporter=Reporter(quiet=True))
            seconds = time.perf_counter() - started
            drift, conversion = result["parity"]["drift"], result["parity"]["conversion"]
            rows.append({"run": run.name, "quant": quant, "mib": round(result["bytes"] / 2**20, 1),
                         "mean_kl": drift["mean_kl"], "max_kl": drift["max_kl"],
                         "drift_relative": drift["relative"], "drift_max_abs": drift["max_abs_logit_diff"],
                         "top1": drift["top1_agreement"], "conversion_relative": conversion["relative"],
                         "positions": drift["positions"], "export_s": round(seconds, 1)})
            print(json.dumps(rows[-1]) if args.json else _line(rows[-1]), flush=True)
            shutil.rmtree(out, ignore_errors=True)


def _line(row: dict) -> str:
    return (f"{row['run']:<24} {row['quant']:<5} {row['mib']:>7} MiB  KL mean {row['mean_kl']:.2e} max "
            f"{row['max_kl']:.2e}  max |d| {row['drift_max_abs']:.4f} ({row['drift_relative']:.4f} of std)  "
            f"top-1 {row['top1']:.1%}  conversion "
            f"{row['conversion_relative']:.1e}  {row['positions']} positions  {row['export_s']} s")


if __name__ == "__main__":
    main()
