"""`llmtune chat` on SmolLM2-135M-Instruct (`smollm2-135m`), timed the way a person sees it.

The real command, `python -m llmtune chat smollm2-135m --max-new-tokens N`, runs in a
pseudo-terminal (stdlib `pty`: its stdin is a terminal, so it is the interactive chat with
readline, not the line-per-prompt mode), and this script types into it as a person would:
a line of text and Enter. Figures, all read from the terminal's side:

- load: from starting the command to its first `>>> ` prompt;
- time to first token: from writing Enter to the first visible character of the answer on the
  terminal (the echoed line and terminal control sequences do not count);
- tokens/s while the answer streams: the answer's tokens (the answer text as shown, tokenized
  again with the model's tokenizer) after the first, over the time from the first visible
  character to the last.

Turns: the session's first question (it pays one-off start-up costs, reported apart); then
`--repeats` times `/reset` and the same short question; then `/reset` and a question whose
answer runs to the token limit (the streaming rate); then a follow-up in that conversation (a
prompt that carries the history).

    /work/locks/exclusive python scripts/bench_chat.py [--repeats 5] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import pty
import re
import select
import statistics
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = "smollm2-135m"
SHORT = "What is the capital of France?"
LONG = "Describe how to make crepes, step by step."
FOLLOW_UP = "Which step is the hardest?"
PROMPT = ">>> "
TAILS = (" [token limit]", " [stopped]")
# CSI/OSC/other escape sequences, and an unfinished one at the end of what has arrived so far
ESCAPES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[@-Z\\-_]|\x1b[^A-Za-z]*$")


def visible(data: bytes) -> str:
    return ESCAPES.sub(b"", data).replace(b"\r", b"").decode("utf-8", "replace")


class Terminal:
    """A command on the other side of a pseudo-terminal; what it writes, with arrival times."""

    def __init__(self, argv: list[str], env: dict):
        self.started = time.perf_counter()
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: a 120x40 terminal, then the command
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            os.execve(argv[0], argv, env)
        self.chunks: list[tuple[float, bytes]] = []

    def read_until(self, done: Callable[[str], bool], timeout: float,
                   since: int | None = None) -> list[tuple[float, bytes]]:
        """Read until `done(visible text from chunk `since` on, default: from the call)`; those
        chunks, with their arrival times."""
        start = len(self.chunks) if since is None else since
        deadline = time.monotonic() + timeout
        while not done(visible(b"".join(c for _, c in self.chunks[start:]))):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(visible(b"".join(c for _, c in self.chunks[start:]))[-500:])
            if select.select([self.fd], [], [], left)[0]:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # EIO: the command exited
                    data = b""
                if not data:
                    raise EOFError(visible(b"".join(c for _, c in self.chunks[start:]))[-2000:])
                self.chunks.append((time.perf_counter(), data))
        return self.chunks[start:]

    def type_line(self, text: str) -> tuple[float, int]:
        """Type `text` and Enter; the time Enter was written, and the first chunk since typing."""
        since = len(self.chunks)
        os.write(self.fd, text.encode())
        self.read_until(lambda seen: text in seen, 10)  # the echo: what a person types appears at once
        sent = time.perf_counter()
        os.write(self.fd, b"\r")
        return sent, since

    def close(self) -> int:
        os.write(self.fd, b"/exit\r")
        for _ in range(100):
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        os.kill(self.pid, 9)
        return -9


def after_echo(text: str, seen: str) -> str | None:
    """What appeared after the echoed line `text` and its line end (None: not yet past it)."""
    at = seen.find(text)
    end = seen.find("\n", at + len(text)) if at >= 0 else -1
    return None if end < 0 else seen[end + 1:]


def shown_answer(shown: str) -> str:
    """The answer in what followed the echoed question: less the next prompt and a [token limit] tail."""
    answer = shown.removesuffix(PROMPT).rstrip("\n")
    for tail in TAILS:
        answer = answer.removesuffix(tail)
    return answer


def ask(term: Terminal, text: str, tokenizer, timeout: float) -> dict:
    """Type a question; time its first visible character and its end (the next prompt)."""
    sent, since = term.type_line(text)
    chunks = term.read_until(lambda s: (a := after_echo(text, s)) is not None and a.endswith(PROMPT), timeout, since)
    first = last = None
    grown = 0
    for i, (arrived, _) in enumerate(chunks):
        answer = shown_answer(after_echo(text, visible(b"".join(c for _, c in chunks[:i + 1]))) or "")
        if len(answer.strip()) > grown:  # this chunk showed more of the answer
            grown, first, last = len(answer.strip()), first or arrived, arrived
    answer = shown_answer(after_echo(text, visible(b"".join(c for _, c in chunks))) or "")
    tokens = len(tokenizer.encode(answer, add_special_tokens=False))
    return {"ttft_s": round(first - sent, 3) if first else None, "answer_tokens": tokens,
            "stream_tokens_per_s": round((tokens - 1) / (last - first), 1) if first and last > first else None,
            "answer": answer[:100]}


def reset(term: Terminal) -> None:
    _, since = term.type_line("/reset")
    term.read_until(lambda s: (a := after_echo("/reset", s)) is not None and a.endswith(PROMPT), 30, since)


def session(new_tokens: int, repeats: int, tokenizer) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color"}
    term = Terminal([sys.executable, "-m", "llmtune", "chat", MODEL, "--max-new-tokens", str(new_tokens)], env)
    term.read_until(lambda s: s.endswith(PROMPT), 600)
    load_s = time.perf_counter() - term.started
    first_turn = ask(term, SHORT, tokenizer, 300)
    short = []
    for _ in range(repeats):
        reset(term)
        short.append(ask(term, SHORT, tokenizer, 300))
    reset(term)
    long = ask(term, LONG, tokenizer, 600)
    follow_up = ask(term, FOLLOW_UP, tokenizer, 600)
    code = term.close()
    ttfts = [t["ttft_s"] for t in short]
    return {"load_s": round(load_s, 2), "first_turn": first_turn,
            "short": {"question": SHORT, "ttft_s": ttfts, "ttft_s_median": statistics.median(ttfts),
                      "ttft_s_max": max(ttfts), "answer": short[0]["answer"], "answer_tokens": short[0]["answer_tokens"]},
            "long_answer": {"question": LONG, **long}, "follow_up": {"question": FOLLOW_UP, **follow_up},
            "exit_code": code}


def main() -> None:
    import torch
    from transformers import AutoTokenizer

    from llmtune.models.load import resolve_source

    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=128)
    a = p.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(MODEL))
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch "
                         f"{torch.__version__}", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": f"python -m llmtune chat {MODEL} --max-new-tokens {a.new_tokens} (in a pty)",
              **session(a.new_tokens, a.repeats, tokenizer)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
