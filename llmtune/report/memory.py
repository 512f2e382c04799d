"""Start a peak-memory reading afresh before each run compare executes in its process.

The session reads the peak as torch's max allocated (GPU) or the process's max resident set
(CPU), both of which only grow. Without a reset every run would report the peak of the
largest run before it. On Linux, writing 5 to /proc/self/clear_refs sets the resident-set
high-water mark (and so getrusage's ru_maxrss) back to the current size; what earlier runs
left allocated still counts, so a run's CPU peak includes the process's baseline.
"""

from __future__ import annotations

import gc


def reset_peak_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    except ImportError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:  # not Linux, or not allowed: the reading stays cumulative
        pass
