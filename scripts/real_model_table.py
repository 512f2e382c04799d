"""docs/real-model.md's table: does training the real causal LM (SmolLM2-135M-Instruct, the
built-in `smollm2-135m`) make it better on held-out rows, beyond noise, for every method?

Every number comes from `python -m llmtune train|eval ... --json` run as a subprocess (the
classification reference from scripts/smollm2_classify_reference.py); this script writes the
data subsets (scripts/real_model_data.py says how each is drawn) and recipes, runs the commands
and keeps their JSON in WORK/results.json, one entry per row of the table.

Resumable per row: a finished row is never run again (unless --redo), so a series can span
several sittings; with --lock PATH each row runs holding an exclusive flock on PATH and lets go
between rows (a shared machine's other jobs get in between). A row that fails is recorded as
failed with its error, and the series goes on.

  python scripts/real_model_table.py --rows 'sft/*' --lock /work/locks/cpu.lock
  python scripts/real_model_table.py --list            # the rows, done or not
  python scripts/real_model_table.py --render          # the markdown tables from WORK/results.json
Seeds: data draws 0, training 0, sampling 0. Sizes were set for runs of at most ~15 minutes
each on 2 CPU cores; docs/real-model.md says what a longer run would use.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_model_data as D  # noqa: E402
import real_model_rows as R  # noqa: E402
from bench_common import machine  # noqa: E402  (the CPU line every benchmark records)

sys.path.insert(0, str(D.ROOT))
from llmtune.atomic import write_json  # noqa: E402

ROOT = D.ROOT


class Table:
    """The results file and the commands that fill it."""

    def __init__(self, work: Path, data: Path, lock: Path | None):
        self.work, self.data, self.lock = work, data, lock
        self.results_file = work / "results.json"
        self.results = json.loads(self.results_file.read_text()) if self.results_file.exists() else {}

    def save(self, key: str) -> None:
        """Write row `key` into the results file, keeping rows another series wrote meanwhile."""
        import fcntl

        with open(self.work / ".results.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            on_disk = json.loads(self.results_file.read_text()) if self.results_file.exists() else {}
            on_disk[key] = self.results[key]
            self.results = {**on_disk, **{k: v for k, v in self.results.items() if k not in on_disk}}
            write_json(self.results_file, json.loads(json.dumps(on_disk, default=str)))

    def llmtune(self, *args) -> dict:
        cmd = [sys.executable, "-m", "llmtune", *map(str, args), "--json"]
        print(f"[{time.strftime('%H:%M:%S')}]   {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd[3:])}\n{proc.stderr[-2500:]}")
        out = json.loads(proc.stdout)
        out["_seconds"] = round(time.perf_counter() - started, 1)
        out["_command"] = "llmtune " + " ".join(map(str, args))
        return out

    def script(self, *args) -> dict:
        """A script that prints one JSON line last (the plain transformers reference)."""
        cmd = [sys.executable, *map(str, args)]
        print(f"[{time.strftime('%H:%M:%S')}]   {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            raise RuntimeError(f"exit {proc.returncode}: {' '.join(cmd[1:])}\n{proc.stderr[-2500:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        out["_seconds"] = round(time.perf_counter() - started, 1)
        return out

    def recipe(self, name: str, content: dict) -> Path:
        path = self.work / f"{name.replace('/', '-')}.yaml"
        path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path

    def file(self, name: str, rows: list[dict]) -> str:
        return str(D.write(self.work / name, rows))

    def run_dir(self, key: str) -> Path:
        return self.work / "runs" / key.replace("/", "-")

    def train_and_eval(self, key: str, recipe: dict, again: bool = True) -> dict:
        """Train the row's recipe, then score the run with `llmtune eval` (the same command as
        the before row). `again=False`: the final eval `train` ran is the whole evaluation
        (preference methods score pairs and generate there), so it is not run twice."""
        path, run = self.recipe(key, recipe), self.run_dir(key)
        trained = self.llmtune("train", path, "--output", run, "--overwrite")
        scored = self.llmtune("eval", run) if again else trained["eval"]
        return {"train": trained, "eval": scored, "run": str(run)}

    @contextmanager
    def holding(self):
        """The exclusive CPU lock for one row; with a turnstile (a `turn.lock` beside the lock),
        held while waiting and running, so that shared holders queue behind a waiting row."""
        if self.lock is None:
            yield
            return
        import fcntl

        turn = self.lock.parent / "turn.lock"
        with ExitStack() as stack:
            for path in ([turn] if turn.exists() else []) + [self.lock]:
                handle = stack.enter_context(open(path, "a"))
                fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield

    def run_row(self, key: str, redo: bool) -> None:
        if self.results_file.exists():  # another series may have finished it meanwhile
            self.results = {**self.results, **json.loads(self.results_file.read_text())}
        if key in self.results and not redo and "failed" not in self.results[key]:
            print(f"{key}: done ({self.results[key].get('finished')})", file=sys.stderr)
            return
        with self.holding():
            print(f"[{time.strftime('%H:%M:%S')}] {key}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                out = R.ROWS[key](self)
            except Exception as exc:  # noqa: BLE001 - recorded, and the series goes on
                out = {"failed": f"{type(exc).__name__}: {exc}"}
                print(f"{key} FAILED: {out['failed'][-1500:]}", file=sys.stderr)
            out.update(seconds=round(time.perf_counter() - started, 1), finished=time.strftime("%Y-%m-%d %H:%M"),
                       machine=machine())
            self.results[key] = out
            self.save(key)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="*", help="comma-separated row names or globs (default: all)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "real-model")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--lock", type=Path, help="hold an exclusive flock on this file during each row")
    parser.add_argument("--redo", action="store_true", help="run finished rows again")
    parser.add_argument("--list", action="store_true", help="list the rows and whether each is done")
    parser.add_argument("--render", action="store_true", help="print the tables from WORK/results.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    table = Table(args.work.resolve(), args.data.resolve(), args.lock)
    patterns = args.rows.split(",")
    keys = [k for k in R.ROWS if any(fnmatch.fnmatch(k, p) for p in patterns)]
    if args.list:
        for k in R.ROWS:
            state = table.results.get(k)
            print(f"{k:28} {'-' if state is None else 'FAILED' if 'failed' in state else state.get('finished')}")
        return
    if not args.render:
        for key in keys:
            table.run_row(key, args.redo)
    import real_model_render

    print(real_model_render.render(table.results))


if __name__ == "__main__":
    main()
