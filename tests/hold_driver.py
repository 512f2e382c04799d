"""`llmtune ARGS...` with the training loop held after optimizer step N, for tests that stop a
real run where they choose instead of racing a timer:

    python tests/hold_driver.py N train RECIPE --output DIR

After step N the loop runs one more micro-batch (so the process sits mid gradient
accumulation), logs "holding after step N", and waits until a signal asks the run to stop
(SIGTERM/SIGINT: the run then checkpoints and exits as it would anyway) or SIGKILL ends it.
The hold wraps the loop from here; production code carries no test aid."""

from __future__ import annotations

import sys
import time


def hold_after(step: int) -> None:
    from llmtune.train.loop import Loop

    original = Loop._forward_backward
    held = False

    def forward_backward(self, idx, step_items, last):
        nonlocal held
        original(self, idx, step_items, last)
        if not held and self.step == step:
            held = True
            self.rep.log(f"holding after step {step} (mid-accumulation) until a signal arrives")
            while self.job.stop_requested() is None:
                time.sleep(0.02)

    Loop._forward_backward = forward_backward


if __name__ == "__main__":
    hold_after(int(sys.argv[1]))
    sys.argv = ["llmtune", *sys.argv[2:]]
    from llmtune.cli import main

    main()
