"""`llmtune chat` in a real terminal, driven as a person would: tmux types into it and reads
the screen. The answer streams (text on screen while it is still being written), Ctrl-C in the
middle stops that answer and not the chat, /reset starts over, /exit leaves with exit 0."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TMUX = shutil.which("tmux")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(TMUX is None, reason="needs tmux (a real terminal)")]


class Terminal:
    def __init__(self, command: str, env: dict):
        self.socket = f"llmtune-test-{uuid.uuid4().hex[:8]}"  # a tmux server of our own
        self.env = env
        self._tmux("new-session", "-d", "-s", "chat", "-x", "160", "-y", "50", command)

    def _tmux(self, *args: str) -> str:
        return subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True, env=self.env,
                              check=True, timeout=30).stdout

    def type(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "chat", *keys)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-t", "chat", "-S", "-200")

    def wait_for(self, check, timeout: float = 60.0, every: float = 0.02) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.screen()
            if check(text):
                return text
            time.sleep(every)
        raise AssertionError(f"the terminal never showed what was expected; it shows:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True, env=self.env, timeout=30)


@pytest.fixture
def terminal(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TERM": "xterm-256color"}
    env.pop("TMUX", None)
    done = tmp_path / "exit-code"
    # --max-new-tokens beyond the tiny model's context: an answer runs ~480 tokens (a second or so)
    command = (f"{sys.executable} -m llmtune chat tiny-llama --max-new-tokens 2000; "
               f"echo $? > {done}; sleep 60")
    term = Terminal(command, env)
    term.exit_code = lambda: done.read_text().strip() if done.exists() else None
    yield term
    term.close()


def _answer_so_far(screen: str, question: str) -> str:
    """What is on screen below the question (notices left out)."""
    below = screen.rsplit(question, 1)[-1].split("\n")[1:]
    return "\n".join(line for line in below if not line.startswith(("warning:", "note:"))).strip()


def test_chat_in_a_terminal(terminal):
    terminal.wait_for(lambda s: s.rstrip().endswith(">>>"))  # loaded, asking
    question = "tell me a long story about the sea"
    terminal.type(question, "Enter")
    # text on screen while the answer is still being written: it streams; then Ctrl-C
    streaming = terminal.wait_for(lambda s: len(_answer_so_far(s, question)) > 3)
    terminal.type("C-c")
    stopped = terminal.wait_for(lambda s: "[stopped]" in s and s.rstrip().endswith(">>>"))
    answer = _answer_so_far(stopped, question).split("[stopped]")[0]
    assert "[stopped]" not in streaming and len(answer.strip()) > 0
    assert len(answer.replace("\n", "")) < 1200, "the answer ran on after Ctrl-C"

    terminal.type("and then?", "Enter")  # the chat goes on after Ctrl-C
    terminal.wait_for(lambda s: s.count(">>> ") >= 3 and s.rstrip().endswith(">>>"), timeout=120)
    terminal.type("/reset", "Enter")
    terminal.wait_for(lambda s: "(conversation reset)" in s and s.rstrip().endswith(">>>"))
    terminal.type("/exit", "Enter")
    deadline = time.monotonic() + 30
    while terminal.exit_code() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert terminal.exit_code() == "0"
    assert "Traceback" not in terminal.screen()
