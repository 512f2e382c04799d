"""Read prompts, stream answers.

In a terminal: a prompt, the answer streamed token by token, `/reset` and `/exit` (or Ctrl-D);
Ctrl-C while an answer streams stops that answer (a flag the decoder checks between tokens)
and the chat goes on; Ctrl-C at the prompt only clears the line. With stdin not a terminal
(a script): one prompt per input line, one answer per output line (a newline inside an answer
written as `\\n`, a backslash as `\\\\`), nothing else on stdout.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator, TextIO

from llmtune.chat.conversation import Conversation, MessageTooLong, answer_reserve
from llmtune.generation.params import CANCELLED, LENGTH, Request, SamplingParams

if TYPE_CHECKING:
    from llmtune.runs.inference import InferenceModel

PROMPT = ">>> "
HELP = "/reset starts over, /exit (or Ctrl-D) leaves; Ctrl-C stops an answer"


@dataclass
class Answer:
    text: str
    finish_reason: str


@contextmanager
def ctrl_c_sets(flag: threading.Event) -> Iterator[None]:
    """While inside: Ctrl-C (SIGINT) sets `flag` instead of raising KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; nothing to redirect
        return
    previous = signal.signal(signal.SIGINT, lambda *_: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class ChatSession:
    def __init__(self, lm: "InferenceModel", params: SamplingParams, system: str | None, reporter,
                 out: TextIO, tty: bool):
        self.lm, self.params, self.reporter, self.out, self.tty = lm, params, reporter, out, tty
        self.conversation = Conversation(lm, system)
        self.asked = 0
        if params.max_new_tokens > answer_reserve(params.max_new_tokens, lm.context_length):
            reporter.log(f"note: answers stop where the model's context ({lm.context_length} tokens) ends, before "
                         f"--max-new-tokens {params.max_new_tokens} once the conversation is long")

    def command(self, line: str) -> str | None:
        """'exit', 'reset' or None (not a command: a prompt)."""
        word = line.strip().lower()
        if word in ("/exit", "/quit", "/bye"):
            return "exit"
        if word in ("/reset", "/clear"):
            self.conversation.reset()
            if self.tty:
                self.reporter.log("(conversation reset)")
            return "reset"
        return None

    def ask(self, text: str) -> Answer | None:
        """Stream the answer to `text` onto `out` (in a terminal) and keep the exchange."""
        try:
            fitted = self.conversation.prompt_for(text, self.params.max_new_tokens)
        except MessageTooLong as exc:
            self.reporter.warn(str(exc))
            return None
        if fitted.notice:
            self.reporter.warn(fitted.notice)
        # each answer its own seed: the same question twice is two draws when sampling
        params = replace(self.params, max_new_tokens=fitted.max_new_tokens, seed=self.params.seed + self.asked)
        self.asked += 1
        stop = threading.Event()
        parts: list[str] = []
        reason = CANCELLED
        with ctrl_c_sets(stop):
            for delta in self.lm.engine.stream(Request(fitted.ids, params, cancel=stop)):
                parts.append(delta.text)
                if self.tty and delta.text:
                    self.out.write(delta.text)
                    self.out.flush()
                reason = delta.finish_reason or reason
        answer = Answer("".join(parts), reason)
        self.conversation.record(text, answer.text)
        return answer


def run_terminal(session: ChatSession, read=input) -> None:
    session.reporter.log(f"{session.lm.describe()}\n{HELP}")
    while True:
        try:
            line = read(PROMPT)
        except EOFError:
            session.out.write("\n")
            return
        except KeyboardInterrupt:
            session.out.write(f"\n({HELP})\n")
            continue
        if not line.strip():
            continue
        what = session.command(line)
        if what == "exit":
            return
        if what is not None:
            continue
        answer = session.ask(line)
        if answer is None:
            continue
        tail = {CANCELLED: " [stopped]", LENGTH: " [token limit]"}.get(answer.finish_reason, "")
        session.out.write(tail + "\n")
        session.out.flush()


def run_lines(session: ChatSession, lines: TextIO) -> int:
    """One answer line per prompt line (a blank prompt line gets a blank answer line; /reset
    and /exit lines get none). Returns the number of answers."""
    answered = 0
    for raw in lines:
        line = raw.rstrip("\r\n")
        what = session.command(line)
        if what == "exit":
            break
        if what is not None:
            continue
        answer = session.ask(line) if line.strip() else None
        text = answer.text if answer is not None else ""
        session.out.write(text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r") + "\n")
        session.out.flush()
        answered += 1
    return answered
