"""What every route shares: the served model, the worker that owns it, the API key, and
how a route hands the worker a job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmtune.serve.api_errors import not_served, queue_full, shutting_down, unknown_model
from llmtune.serve.worker import Closed, Job, QueueFull

if TYPE_CHECKING:
    from llmtune.serve.served import Served
    from llmtune.serve.worker import Worker


@dataclass
class Context:
    served: Served
    worker: Worker
    api_key: str | None
    log: Any
    """f(message): one line on the server's stderr."""

    def check_model(self, asked: str, endpoint: str) -> None:
        if asked != self.served.id:
            raise unknown_model(asked, self.served.id)
        if endpoint not in self.served.endpoints:
            raise not_served(endpoint, asked, self.served.endpoints)

    def submit(self, kind: str, payload: Any) -> Job:
        job = Job(kind, payload, asyncio.get_running_loop())
        try:
            self.worker.submit(job)
        except QueueFull:
            raise queue_full(self.worker.max_queue) from None
        except Closed:
            raise shutting_down() from None
        return job

    async def run(self, kind: str, payload: Any) -> Any:
        """Submit a job and wait for its result; if the client goes away meanwhile (the
        route's task is cancelled), the job is cancelled too."""
        job = self.submit(kind, payload)
        try:
            return await job.result()
        except asyncio.CancelledError:
            job.cancel.set()
            raise
