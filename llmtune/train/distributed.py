"""Which process this is when a recipe runs under `torchrun` or `accelerate launch`.

Read from the launcher's environment, so it is known before Accelerate starts (the run
directory is opened, and refused, by the main process alone)."""

from __future__ import annotations

import os


def process_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return process_rank() == 0
