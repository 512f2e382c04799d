"""SIGINT/SIGTERM during training: set a flag that the trainer checks between optimizer steps,
so the run checkpoints and stops cleanly; a second Ctrl-C stops at once."""

from __future__ import annotations

import signal


class StopRequested:
    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some test runners)
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
