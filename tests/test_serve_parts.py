"""The server's parts without a server: the worker's queue and batching, the key check."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llmtune.serve.access import authorized, is_loopback
from llmtune.serve.worker import Cancelled, Job, QueueFull, Worker


def test_loopback_and_key_check():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    assert authorized(None, None) and authorized("anything", None)
    assert authorized("Bearer s3cret", "s3cret") and authorized("bearer s3cret", "s3cret")
    assert not authorized("Bearer s3cre", "s3cret") and not authorized("s3cret", "s3cret")
    assert not authorized(None, "s3cret") and not authorized("Basic s3cret", "s3cret")


def _run(coro):
    return asyncio.run(coro)


def test_full_queue_refuses_and_waiting_jobs_of_a_kind_batch_together():
    release = threading.Event()
    batches: list[list[int]] = []

    def slow(jobs):
        release.wait(10)
        for job in jobs:
            job.finish(job.payload)

    def record(jobs):
        batches.append([job.payload for job in jobs])
        for job in jobs:
            job.finish(job.payload * 10)

    async def scenario():
        loop = asyncio.get_running_loop()
        worker = Worker({"slow": slow, "fast": record}, max_queue=3, max_batch=2)
        worker.start()
        first = Job("slow", 0, loop)
        worker.submit(first)
        while worker.waiting:  # the worker has taken the first job and is blocked in it
            await asyncio.sleep(0.01)
        queued = [Job("fast", i, loop) for i in (1, 2, 3)]
        for job in queued:
            worker.submit(job)
        with pytest.raises(QueueFull):
            worker.submit(Job("fast", 4, loop))
        release.set()
        results = [await job.result() for job in queued]
        worker.stop(5)
        return await first.result(), results

    first, results = _run(scenario())
    assert first == 0 and results == [10, 20, 30]
    assert batches == [[1, 2], [3]]  # waited together: one call for two (max_batch), then the rest


def test_a_failing_handler_fails_its_jobs_and_the_worker_goes_on():
    def broken(jobs):
        raise ValueError("bad input")

    def fine(jobs):
        for job in jobs:
            job.finish("ok")

    async def scenario():
        loop = asyncio.get_running_loop()
        worker = Worker({"broken": broken, "fine": fine}, max_queue=4, max_batch=4)
        worker.start()
        bad, good = Job("broken", None, loop), Job("fine", None, loop)
        worker.submit(bad)
        worker.submit(good)
        with pytest.raises(ValueError):
            await bad.result()
        answer = await good.result()
        worker.stop(5)
        return answer

    assert _run(scenario()) == "ok"


def test_a_job_cancelled_while_waiting_never_runs():
    ran: list[int] = []
    gate = threading.Event()

    def handler(jobs):
        gate.wait(10)
        for job in jobs:
            ran.append(job.payload)
            job.finish(None)

    async def scenario():
        loop = asyncio.get_running_loop()
        worker = Worker({"k": handler}, max_queue=4, max_batch=1)
        worker.start()
        jobs = [Job("k", i, loop) for i in range(3)]
        for job in jobs:
            worker.submit(job)
        jobs[1].cancel.set()
        gate.set()
        await jobs[0].result()
        await jobs[2].result()
        with pytest.raises(Cancelled):
            await jobs[1].result()
        worker.stop(5)

    _run(scenario())
    assert ran == [0, 2]


def test_after_a_shared_batch_the_next_waits_briefly_to_fill_up():
    """Clients answered together come back a few milliseconds apart: after a batch of several,
    the worker waits (up to batch_wait) for them instead of starting with the first alone."""
    sizes: list[int] = []

    def record(jobs):
        sizes.append(len(jobs))
        for job in jobs:
            job.finish(None)

    async def scenario():
        loop = asyncio.get_running_loop()
        worker = Worker({"k": record}, max_queue=8, max_batch=4, batch_wait=0.5)
        first_wave = [Job("k", i, loop) for i in range(3)]
        for job in first_wave:  # queued before the worker starts: one batch of three
            worker.submit(job)
        worker.start()
        for job in first_wave:
            await job.result()
        second_wave = [Job("k", i, loop) for i in range(4)]
        for job in second_wave:  # trickling in: the first alone would start a batch of one
            worker.submit(job)
            await asyncio.sleep(0.05)
        for job in second_wave:
            await job.result()
        lone = Job("k", 9, loop)
        worker.submit(lone)
        await lone.result()
        worker.stop(5)

    _run(scenario())
    assert sizes == [3, 4, 1]  # the lone job after a full batch of 4 waited at most batch_wait, then ran
