"""`llmtune serve` as a library call: check the address and key, open the model, start the
worker, run uvicorn until SIGTERM/SIGINT, drain, exit 0.

Draining: on SIGTERM uvicorn stops accepting connections and waits for the requests in
flight (streams included) to finish, up to `drain_seconds`; then the worker finishes what
it holds and the process exits 0. uvicorn re-raises the signal it caught once it is done
(so that a default handler would end the process by that signal); llmtune's own handler
takes that re-raise, so a drained server exits 0."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from dataclasses import dataclass

from llmtune.errors import UserError


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    name: str | None = None
    """The model id clients send; default: the run folder's name or the model name."""
    max_queue: int = 64
    max_batch: int = 8
    batch_wait_ms: float = 50.0
    drain_seconds: float = 30.0
    trust_remote_code: bool = False
    log_requests: bool = False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a taken port fails in a second."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc}); pick another "
                        f"port (--port 0 takes a free one) or stop what holds it") from None
    sock.set_inheritable(True)
    return sock


def serve(source: str, opts: ServeOptions, reporter) -> int:
    from llmtune.serve.access import resolve_key

    key = resolve_key(opts.host, opts.api_key)  # refuse an open address before anything loads
    sock = bind(opts.host, opts.port)
    port = sock.getsockname()[1]
    try:
        return _serve(source, opts, key, sock, port, reporter)
    finally:
        sock.close()


def _serve(source: str, opts: ServeOptions, key: str | None, sock: socket.socket, port: int, reporter) -> int:
    import uvicorn

    from llmtune.serve.app import build_app
    from llmtune.serve.context import Context
    from llmtune.serve.handlers import handlers_for
    from llmtune.serve.served import open_served
    from llmtune.serve.worker import Worker

    reporter.log(f"loading {source}")
    served = open_served(source, name=opts.name, trust_remote_code=opts.trust_remote_code, reporter=reporter)
    worker = Worker(handlers_for(served, reporter), max_queue=opts.max_queue, max_batch=opts.max_batch,
                    batch_wait=opts.batch_wait_ms / 1000)
    ctx = Context(served, worker, key, reporter.log)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        worker.start()
        host = f"[{opts.host}]" if ":" in opts.host else opts.host
        reporter.log(f"serving {served.id!r} ({', '.join(served.endpoints)}) on http://{host}:{port}"
                     f"{' (API key required)' if key else ''}")
        yield
        worker.stop()
        reporter.log(f"stopped: {worker.jobs_done} requests answered in {worker.batches} batches")

    config = uvicorn.Config(build_app(ctx, lifespan), log_level="warning", access_log=opts.log_requests,
                            timeout_graceful_shutdown=opts.drain_seconds, lifespan="on")
    server = uvicorn.Server(config)
    caught: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):  # takes uvicorn's re-raise once it has drained
        signal.signal(sig, lambda signum, _frame: caught.append(signum))
    server.run(sockets=[sock])
    if not server.started:
        print("error: the server did not start (see the log above)", file=sys.stderr)
        return 1
    if caught:
        reporter.log(f"{signal.Signals(caught[0]).name}: drained and stopped")
    return 0
