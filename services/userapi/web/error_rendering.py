"""Rendering platform/errors.py's exceptions, FastAPI's validation errors and Starlette's HTTP
errors as the one JSON error body, {"error", "message", "request_id"}, for every endpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from userapi.platform import context
from userapi.platform.errors import APIError, UpstreamError

log = logging.getLogger("userapi.errors")


class ErrorBody(BaseModel):
    error: str
    message: str
    request_id: str


def error_response(
    status: int, error: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": error, "message": message, "request_id": context.request_id()}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _header(description: str, kind: str = "integer") -> dict[str, object]:
    return {"description": description, "schema": {"type": kind}}


_RETRY_AFTER = _header("Seconds after which a retry is expected to succeed.")
_HEADERS: dict[int, dict[str, object]] = {
    429: {
        "Retry-After": _RETRY_AFTER,
        "RateLimit-Policy": _header(
            'The quota, e.g. `"quota";q=100;w=60` (draft-ietf-httpapi-ratelimit-headers).',
            "string",
        ),
        "RateLimit": _header('What is left of it, e.g. `"quota";r=0;t=42`.', "string"),
    },
    503: {"Retry-After": _RETRY_AFTER},
}

# Documented in every route's OpenAPI entry so clients can generate the error type.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {
        "model": ErrorBody,
        "description": description,
        **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
    }
    for status, description in {
        400: "Malformed request",
        401: "Missing or invalid access token",
        403: "The token lacks the required permission",
        404: "No such user",
        429: "This client's quota for the endpoint is spent (`quota_exceeded`; only when the "
        "endpoint has a client quota)",
        502: "Auth0 failed",
        503: "Auth0's rate limit, or the API's shared Auth0 rate budget, left no call in time "
        "(`rate_limited`); nothing was changed",
        504: "Auth0 did not answer in time",
    }.items()
}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        location = ".".join(
            str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")
        )
        parts.append(f"{location or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "Invalid request."


def render_error(exc: APIError | UpstreamError) -> JSONResponse:
    """The response for an error raised by an endpoint or a dependency."""
    if isinstance(exc, UpstreamError):
        error = exc.to_api_error()
        log.warning("upstream failure", extra={"error": repr(exc), "status": error.status})
    else:
        error = exc
    return error_response(error.status, error.error, error.message, error.headers)


def install_error_handlers(app: FastAPI) -> None:
    async def on_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError | UpstreamError)
        return render_error(exc)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(400, "invalid_request", _validation_message(exc))

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)

    app.add_exception_handler(APIError, on_error)
    app.add_exception_handler(UpstreamError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
