"""Start `python -m llmtune serve ...` as a user would (a subprocess on loopback, a free port
chosen by the server itself with --port 0) and keep its log lines for the tests to read."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"serving .* on http://127\.0\.0\.1:(\d+)")


class ServerProcess:
    def __init__(self, *args: str, env: dict | None = None, timeout: float = 120.0):
        environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                   **(env or {})}
        if not env or "LLMTUNE_API_KEY" not in env:  # a key in the caller's shell would lock the tests out
            environ.pop("LLMTUNE_API_KEY", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "llmtune", "serve", *args, "--port", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environ)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.port: int | None = None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(timeout) or self.port is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            match = LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                self._ready.set()
        self._ready.set()  # ended before it listened

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n{self.log()}")

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
