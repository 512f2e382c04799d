"""Errors as OpenAI's API writes them: `{"error": {"message", "type", "param", "code"}}`
with a matching HTTP status, so the official clients raise their own typed exceptions
(BadRequestError, AuthenticationError, NotFoundError, ...) with our message in them."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the server answers with an error body instead of a result."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(param: str, message: str) -> ApiError:
    """400 naming the request field at fault (its dotted path, e.g. `messages.0.role`)."""
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


def unknown_model(asked: str, served: str) -> ApiError:
    return ApiError(404, f"model {asked!r} is not served here; this server serves {served!r} "
                         f"(GET /v1/models lists it)", param="model", code="model_not_found")


def not_served(endpoint: str, model: str, serves: list[str]) -> ApiError:
    """The model exists but does not do what the endpoint asks (embeddings of a causal LM, say)."""
    return ApiError(400, f"{endpoint}: model {model!r} does not serve this endpoint; it serves "
                         f"{', '.join(serves)}", param="model", code="unsupported_endpoint")


def queue_full(limit: int) -> ApiError:
    return ApiError(503, f"the server is busy: {limit} requests are already waiting; retry shortly",
                    type="server_error", code="queue_full")


def unauthorized() -> ApiError:
    return ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                    type="invalid_request_error", code="invalid_api_key")


def shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down; retry on another instance",
                    type="server_error", code="shutting_down")


def validation_param(loc: tuple | list) -> str:
    """The dotted path of a pydantic error location, without FastAPI's leading `body`."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"
