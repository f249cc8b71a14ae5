"""The errors an endpoint, the runtime and its clients raise; web/error_rendering.py renders
them as the one JSON body {"error", "message", "request_id"}. No web framework is imported here:
the database driver, the Auth0 client and the token verifier raise these without FastAPI.

The hierarchy, with what a caller sees:

    APIError                a refusal or a client's mistake: its own status, error and message
    UpstreamError           a dependency failed; to_api_error() says what the caller sees (502)
    ├── Auth0Error          Auth0 could not answer: 502 auth0_unavailable (.status: Auth0's)
    │   ├── Auth0Timeout        504 auth0_timeout
    │   └── Auth0RateLimited    503 rate_limited, with Retry-After
    ├── Auth0Rejected       Auth0 refused (4xx): 409 conflict, 400 invalid_request, else 502
    ├── JWKSUnavailable     (adapters/access_tokens.py) the signing keys could not be fetched: 502
    └── DatabaseUnavailable (adapters/database.py) 503

The helpers below build the APIErrors every endpoint answers alike (400, 401, 403, 404).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
