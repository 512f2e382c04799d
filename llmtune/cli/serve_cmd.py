"""`llmtune serve RUN|RECIPE|MODEL [--host 127.0.0.1] [--port 8000]`: an OpenAI-compatible HTTP API."""

from __future__ import annotations

from typing import Optional

import typer


def serve(
    source: str = typer.Argument(..., metavar="RUN|RECIPE|MODEL",
                                 help="A run directory, a recipe (serves its base model) or a model (built-in "
                                      "name, local folder, .gguf file)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs an "
                                                         "API key."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on (0: any free port, "
                                                                      "printed at start)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Require `Authorization: Bearer KEY` on every "
                                          "request. Default: $LLMTUNE_API_KEY if set."),
    name: Optional[str] = typer.Option(None, "--name", help="The model id clients send. Default: the run "
                                       "folder's name, else the model name."),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="Requests that may wait for the model; more "
                                                                 "are answered 503 at once."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Waiting requests of one kind run together in "
                                                                "one batch, up to this many."),
    batch_wait_ms: float = typer.Option(50.0, "--batch-wait-ms", min=0, help="After a batch of several requests, "
                                        "the next one waits up to this long for clients to come back and fill it "
                                        "(0: never wait)."),
    drain_seconds: float = typer.Option(30.0, "--drain-seconds", min=0, help="On SIGTERM, how long requests in "
                                        "flight may take to finish before they are cut."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Run model code shipped with the "
                                           "checkpoint (only for models you trust)."),
    log_requests: bool = typer.Option(False, "--log-requests", help="One access-log line per request."),
) -> None:
    """Serve a run or model over an OpenAI-compatible HTTP API (chat, completions, embeddings, classify)."""
    from llmtune.console import Reporter
    from llmtune.serve.server import ServeOptions, serve as run_server

    opts = ServeOptions(host=host, port=port, api_key=api_key, name=name, max_queue=max_queue,
                        max_batch=max_batch, batch_wait_ms=batch_wait_ms, drain_seconds=drain_seconds,
                        trust_remote_code=trust_remote_code, log_requests=log_requests)
    code = run_server(source, opts, Reporter())
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("serve", short_help="Serve a run or model over an OpenAI-compatible HTTP API.")(serve)
