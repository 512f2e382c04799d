"""Start a peak-memory reading afresh before each run compare executes in its process.

The session reads the peak as torch's max allocated (GPU) or the process's max resident set
(CPU), both of which only grow. Without a reset every run would report the peak of the
largest run before it. On Linux, writing 5 to /proc/self/clear_refs sets the resident-set
high-water mark (and so getrusage's ru_maxrss) back to the current size, after freed heap
pages went back to the system; what earlier runs still hold counts, so a run's CPU peak
includes the process's baseline.
"""

from __future__ import annotations

import gc


def reset_peak_memory() -> None:
    gc.collect()
    _return_free_heap()
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


def _return_free_heap() -> None:
    """glibc keeps freed heap pages mapped; malloc_trim hands them back, so they do not count
    toward the next run's resident set."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
