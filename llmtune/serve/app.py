"""The FastAPI application: routes, the API-key check, and errors in OpenAI's shape."""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations, some
# of them names imported inside build_app.
import logging
from typing import TYPE_CHECKING

from llmtune.serve.access import authorized
from llmtune.serve.api_errors import ApiError, error_body, unauthorized, validation_param
# pydantic only (no FastAPI): FastAPI reads the routes' annotations from this module's names.
from llmtune.serve.schemas import ChatRequest, ClassifyRequest, CompletionRequest, EmbeddingsRequest
from llmtune.serve.worker import Cancelled

if TYPE_CHECKING:
    from llmtune.serve.context import Context

log = logging.getLogger("llmtune.serve")


class KeyCheck:
    """Plain ASGI middleware: every HTTP request, to any path, needs the key when one is set.
    (Not Starlette's BaseHTTPMiddleware, which buffers streams and hides client disconnects.)"""

    def __init__(self, app, key: str | None):
        self.app = app
        self.key = key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.key is not None:
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if not authorized(header, self.key):
                from starlette.responses import JSONResponse

                err = unauthorized()
                await JSONResponse(err.body(), status_code=err.status,
                                   headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(ctx: "Context", lifespan=None):
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse

    # No /docs or /openapi.json: the API is OpenAI's, documented in docs/using.md.
    app = FastAPI(title="llmtune", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(Cancelled)
    async def cancelled(_request, _exc: Cancelled):
        # Nobody reads it: the client is gone. 499 as nginx logs a client that closed first.
        return JSONResponse(error_body("the client closed the request", "invalid_request_error", None,
                                       "client_closed"), status_code=499)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        param = validation_param(first.get("loc", ()))
        message = first.get("msg", "invalid value")
        if first.get("type") == "json_invalid":
            param, message = "body", f"not valid JSON ({first.get('ctx', {}).get('error', message)})"
        elif first.get("type") == "extra_forbidden":
            message = "unknown field; remove it (see docs/using.md for the fields this server takes)"
        return JSONResponse(error_body(f"{param}: {message}", "invalid_request_error", param, "invalid_value"),
                            status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_request, exc: HTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crashed(_request, exc: Exception):
        log.exception("request failed")
        return JSONResponse(error_body(f"internal error ({type(exc).__name__}); the server log has the details",
                                       "server_error"), status_code=500)

    _routes(app, ctx)
    return KeyCheck(app, ctx.api_key)


def _routes(app, ctx: "Context") -> None:
    from starlette.requests import Request

    from llmtune.serve import routes_encode, routes_generate

    @app.get("/health")
    async def health() -> dict:
        w = ctx.worker
        return {"status": "ok", "waiting": w.waiting, "answered": w.jobs_done, "batches": w.batches}

    @app.get("/v1/models")
    async def models() -> dict:
        s = ctx.served
        return {"object": "list", "data": [{"id": s.id, "object": "model", "created": s.created,
                                            "owned_by": "llmtune", "endpoints": s.endpoints, **s.details}]}

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest) -> dict:
        return await routes_encode.embeddings(body, ctx)

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest) -> dict:
        return await routes_encode.classify(body, ctx)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        return await routes_generate.chat(body, request, ctx)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await routes_generate.completions(body, request, ctx)
