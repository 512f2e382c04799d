"""The one thread that owns the model. Torch on a CPU runs one forward at a time well and
two badly, so every request becomes a Job on a bounded queue and this worker runs them:
jobs of the same kind that are waiting together are handed to their handler as one batch
(one padded forward instead of several). A full queue refuses at once (the route answers
503); a handler's exception fails its jobs, never the worker.

Jobs talk back to the event loop that made them through `loop.call_soon_threadsafe`: a
handler calls `job.emit(...)` for streamed pieces and `job.finish(...)` / `job.fail(...)`
once; the route awaits `job.next_event()`. A route sets `job.cancel` when its client goes
away; handlers check it between steps (the generation core takes it as its cancel flag)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("llmtune.serve")

DONE, ERROR, PIECE = "done", "error", "piece"


class QueueFull(Exception):
    """More jobs are waiting than the queue holds."""


class Closed(Exception):
    """The worker is shutting down and takes no new jobs."""


class Cancelled(Exception):
    """The job's client went away before the job ran; it was dropped unrun."""


_ids = itertools.count(1)


@dataclass(eq=False)
class Job:
    kind: str
    """Which handler runs it; jobs of one kind waiting together are batched."""
    payload: Any
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event = field(default_factory=threading.Event)
    id: int = field(default_factory=lambda: next(_ids))
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    finished: bool = False

    def _put(self, event: tuple[str, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is gone (server stopped): nobody is listening
            pass

    def emit(self, piece: Any) -> None:
        self._put((PIECE, piece))

    def finish(self, result: Any = None) -> None:
        if not self.finished:
            self.finished = True
            self._put((DONE, result))

    def fail(self, exc: BaseException) -> None:
        if not self.finished:
            self.finished = True
            self._put((ERROR, exc))

    async def next_event(self) -> tuple[str, Any]:
        return await self.events.get()

    async def result(self) -> Any:
        """The result of a job that streams nothing; raises what the handler failed with."""
        while True:
            kind, value = await self.next_event()
            if kind == DONE:
                return value
            if kind == ERROR:
                raise value


Handler = Callable[[list[Job]], None]


class Worker:
    """`handlers`: kind -> f(jobs) run on the worker thread; it must finish or fail every job.
    `max_queue`: jobs that may wait (the one running not counted). `max_batch`: jobs per call.
    `batch_wait`: seconds a batch may wait for more jobs of its kind to fill it, when the last
    batch of that kind held several (clients that were answered together come back together,
    a few milliseconds apart; a lone client never waits)."""

    def __init__(self, handlers: dict[str, Handler], *, max_queue: int, max_batch: int, batch_wait: float = 0.0):
        self.handlers = handlers
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.batch_wait = batch_wait
        self._last_size: dict[str, int] = {}
        self._waiting: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llmtune-serve-worker", daemon=True)
        self.batches = 0
        self.jobs_done = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> None:
        if job.kind not in self.handlers:
            raise KeyError(job.kind)
        with self._cond:
            if self._closing:
                raise Closed()
            if len(self._waiting) >= self.max_queue:
                raise QueueFull()
            self._waiting.append(job)
            self._cond.notify()

    def stop(self, timeout: float | None = None) -> None:
        """Run what is already queued, then end the thread (what is still waiting after
        `timeout` is cancelled)."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                for job in self._waiting:
                    job.cancel.set()
            self._thread.join()

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while not self._waiting:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._waiting.popleft()
            batch = [first]
            self._take_same_kind(batch)
            if self.batch_wait > 0 and self._last_size.get(first.kind, 1) > 1:
                deadline = time.monotonic() + self.batch_wait
                while len(batch) < self.max_batch and not self._closing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                    self._take_same_kind(batch)
            self._last_size[first.kind] = len(batch)
            return batch

    def _take_same_kind(self, batch: list[Job]) -> None:
        for job in list(self._waiting):
            if len(batch) >= self.max_batch:
                return
            if job.kind == batch[0].kind:
                self._waiting.remove(job)
                batch.append(job)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = []
            for job in batch:
                if job.cancel.is_set():  # the client left while it waited: nothing to compute
                    job.fail(Cancelled())
                else:
                    live.append(job)
            if not live:
                continue
            try:
                self.handlers[live[0].kind](live)
            except Exception as exc:  # a bug or a bad input the route let through: fail the jobs, keep serving
                log.exception("%s batch of %d failed", live[0].kind, len(live))
                for job in live:
                    job.fail(exc)
            for job in live:
                if not job.finished:
                    job.fail(RuntimeError(f"{job.kind} handler returned without an answer"))
            self.batches += 1
            self.jobs_done += len(live)
