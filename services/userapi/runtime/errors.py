"""The one error shape, {"error", "message", "request_id"}, for every failure of every endpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from userapi.runtime import context

log = logging.getLogger("userapi.errors")


class ErrorBody(BaseModel):
    error: str
    message: str
    request_id: str


class APIError(Exception):
    """Raised anywhere in a request; rendered as the JSON error body with `status`."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = dict(headers or {})


class UpstreamError(Exception):
    """A dependency (Auth0, the database) failed; subclasses say which status the caller sees."""

    def to_api_error(self) -> APIError:
        return APIError(502, "upstream_unavailable", "A dependency failed; try again later.")


class Auth0Error(UpstreamError):
    """Auth0 could not answer; the caller decides whether a stale answer can stand in."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # Auth0's HTTP status, when it answered at all

    def to_api_error(self) -> APIError:
        return APIError(502, "auth0_unavailable", "Auth0 failed to answer; try again later.")


class Auth0Timeout(Auth0Error):
    def to_api_error(self) -> APIError:
        return APIError(504, "auth0_timeout", "Auth0 did not answer in time; try again later.")


class Auth0RateLimited(Auth0Error):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(f"rate limited, retry after {retry_after_seconds}s")
        self.retry_after_seconds = retry_after_seconds

    def to_api_error(self) -> APIError:
        return APIError(
            503,
            "rate_limited",
            "Auth0's rate limit was reached; retry later.",
            {"Retry-After": str(self.retry_after_seconds)},
        )


class Auth0Rejected(UpstreamError):
    """Auth0 refused the request (4xx other than 401, 404 and 429)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"Auth0 answered {status}")
        self.status = status
        self.body = body

    @property
    def message(self) -> str:
        return str(self.body.get("message") or self.body.get("error") or "Auth0 rejected it.")

    def to_api_error(self) -> APIError:
        if self.status == 409:
            return APIError(409, "conflict", self.message)
        if self.status in (400, 413):
            return APIError(400, "invalid_request", f"Auth0 rejected the request: {self.message}")
        # 403 and others mean our own Management API client is misconfigured, not the caller.
        return APIError(502, "auth0_rejected", "Auth0 refused this operation; see the logs.")


def bad_request(message: str, error: str = "invalid_request") -> APIError:
    return APIError(400, error, message)


def not_found(message: str = "Not found.") -> APIError:
    return APIError(404, "not_found", message)


def unauthorized(message: str) -> APIError:
    # RFC 6750 section 3: tell the client which scheme and why.
    return APIError(
        401, "invalid_token", message, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def forbidden(permission: str) -> APIError:
    return APIError(
        403,
        "insufficient_scope",
        f"This operation needs the {permission} permission.",
        {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{permission}"'},
    )


def error_response(
    status: int, error: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = {"error": error, "message": message, "request_id": context.request_id()}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


# Documented in every route's OpenAPI entry so clients can generate the error type.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Malformed request",
        401: "Missing or invalid access token",
        403: "The token lacks the required permission",
        404: "No such user",
        502: "Auth0 failed",
        503: "Auth0 rate limit reached; retry after Retry-After seconds",
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
