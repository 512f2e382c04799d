"""Where an llmtune training step's time goes: torch.profiler over a few steps of a recipe.

Runs the recipe through llmtune's own loop with a profiler wrapped around optimizer steps
`--skip`+1 .. `--skip`+`--steps`, then prints the operators by self time and a summary by
phase (forward, backward, optimizer, loss, data), which is what docs/performance.md quotes.

    python scripts/profile_step.py recipes/quickstart.yaml --set train.max_steps=20
    python scripts/profile_step.py RECIPE --steps 5 --skip 5 --top 25
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", type=Path)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--skip", type=int, default=5, help="steps before profiling starts")
    p.add_argument("--steps", type=int, default=5, help="steps profiled")
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from llmtune.console import Reporter
    from llmtune.recipe import load_recipe
    from llmtune.train import loop as loop_module
    from llmtune.train.session import run_recipe

    total = args.skip + args.steps
    loaded = load_recipe(args.recipe, [*args.overrides, f"train.max_steps={total}", "eval.limit=1"])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    prof = profile(activities=activities, schedule=torch.profiler.schedule(wait=args.skip, warmup=0, active=args.steps,
                                                                           repeat=1))
    real_fb, real_step = loop_module.Loop._forward_backward, loop_module.Loop._optimizer_step

    def forward_backward(self, *a, **kw):
        with record_function("## micro-batch (collate, forward, loss, backward)"):
            return real_fb(self, *a, **kw)

    def optimizer_step(self, advance):
        with record_function("## optimizer step (clip, AdamW, schedule, logging)"):
            out = real_step(self, advance)
        prof.step()
        return out

    loop_module.Loop._forward_backward, loop_module.Loop._optimizer_step = forward_backward, optimizer_step
    with prof:
        run_recipe(loaded, Reporter(quiet=True), output=Path(tempfile.mkdtemp()) / "run")
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=60)
    print(table)
    phases = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key.startswith("## ")}
    print("per step (ms):", {k[3:]: round(v / 1000 / args.steps, 1) for k, v in phases.items()}, file=sys.stderr)


if __name__ == "__main__":
    main()
