"""Auth0's two error shapes: the Management API's envelope and the OAuth 2.0 one of /oauth/token."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}  # fmt: skip


class ManagementError(Exception):
    """Rendered as Auth0's error body: {statusCode, error, message, errorCode}."""

    def __init__(self, status: int, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code

    def body(self) -> dict[str, Any]:
        return management_error_body(self.status, self.message, self.error_code)


def management_error_body(
    status: int, message: str, error_code: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "statusCode": status,
        "error": REASONS.get(status, "Error"),
        "message": message,
    }
    # Auth0 leaves errorCode out of some errors (401 "Invalid token"), so None omits it.
    if error_code:
        body["errorCode"] = error_code
    return body


def invalid_body(detail: str) -> ManagementError:
    return ManagementError(400, f"Payload validation error: '{detail}'.", "invalid_body")


def invalid_query(detail: str) -> ManagementError:
    return ManagementError(400, f"Query validation error: '{detail}'.", "invalid_query_string")


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)
