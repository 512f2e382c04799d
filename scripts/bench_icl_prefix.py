"""Shared-prefix label scoring against re-encoding every prompt, side by side, on SmolLM2-135M.

Both paths are llmtune's own `eval` command on the same recipe, differing only in
`eval.share_prefix`; each case runs plain then shared, and the script prints the time of
each (the eval's own `prompt_seconds`, model loading excluded, and the whole process), the
ratio, and whether the scores agree (accuracy and the full confusion matrix).

Cases (the SST-2 dev sentences bundled in recipes/data, demonstrations drawn from the bundled
training phrases):
  icl:       8-shot random, 8 demonstration sets (eval.demo_sets), the first 200 dev sentences
  templates: 3 templates compared, 8-shot random, 4 demonstration sets, the first 100 sentences

Run it alone on the machine (it is a timing):
  flock -x /tmp/llmtune-cpu.lock python scripts/bench_icl_prefix.py
About 12 minutes on 2 CPU cores, most of it the plain path.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "smollm2-icl-sst2.yaml"
TEMPLATES = ["Review: {{ sentence }}\nSentiment:", "{{ sentence }}\nThe sentiment of this review is",
             "Text: {{ sentence }}\nIs this review positive or negative? Answer:"]
CASES = {
    "icl": ["--limit", "200", "--set", "eval.shots=8", "--set", "eval.demo_sets=8"],
    "templates": ["--limit", "100", "--set", "eval.shots=8", "--set", "eval.demo_sets=4",
                  "--set", f"eval.templates={json.dumps(TEMPLATES)}"],
}


def run_eval(args: list[str], share: bool) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "llmtune", "eval", str(RECIPE), "--json", *args,
           "--set", f"eval.share_prefix={'true' if share else 'false'}"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr}")
    return json.loads(proc.stdout), wall


def main() -> None:
    import torch

    print(f"machine: {machine()}, torch {torch.__version__}")
    print("| case | path | accuracy | prompt s | process s |\n| --- | --- | --- | --- | --- |")
    ratios = {}
    for name, args in CASES.items():
        plain, plain_wall = run_eval(args, share=False)
        shared, shared_wall = run_eval(args, share=True)
        for label, out, wall in (("re-encode every prompt", plain, plain_wall), ("shared prefix", shared, shared_wall)):
            print(f"| {name} | {label} | {out['accuracy']:.4f} | {out['prompt_seconds']:.1f} | {wall:.1f} |")
        same = (plain["accuracy"] == shared["accuracy"] and plain["confusion_matrix"] == shared["confusion_matrix"]
                and plain.get("templates") == shared.get("templates"))
        stats = shared["prompting"]["shared_prefix"]
        ratios[name] = (plain["prompt_seconds"] / shared["prompt_seconds"], plain_wall / shared_wall, same, stats)
    for name, (ratio, wall_ratio, same, stats) in ratios.items():
        print(f"{name}: shared prefix {ratio:.2f}x faster (prompt time; {wall_ratio:.2f}x whole process); "
              f"same scores: {same}; tokens encoded {stats['tokens_encoded']:,} of {stats['tokens_total']:,}")


if __name__ == "__main__":
    main()
