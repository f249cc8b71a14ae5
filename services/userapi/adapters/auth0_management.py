"""Auth0 Management API v2 client: one httpx client per process, a shared token, bounded retries.

Auth0's SDKs cache the management token in process memory only, so every new pod fetches one
(node-auth0 #792). Here the token lives in the shared store too: N cold pods cost one fetch.
In Redis it is encrypted and authenticated with SHARED_CACHE_KEY (adapters/sealed_store.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from userapi.adapters.rate_budget import Priority, RateBudget
from userapi.adapters.shared_store import SharedStore, fill_once
from userapi.platform import context, telemetry
from userapi.platform.errors import Auth0Error, Auth0RateLimited, Auth0Rejected, Auth0Timeout
from userapi.platform.settings import Settings

log = logging.getLogger("userapi.auth0")

_BACKOFF_BASE_SECONDS = 0.2
_BACKOFF_CAP_SECONDS = 4.0
_TOKEN_REFRESH_MARGIN_SECONDS = 300.0  # refresh this long before expiry
_TOKEN_WAIT_SECONDS = 3.0  # how long a pod waits for another pod's token fetch (lock lives 5 s)


def _user_path(user_id: str) -> str:
    """Auth0's `/api/v2/users/{id}` path below the API's base: the id percent-encoded as one
    segment, `|` included (Auth0 documents the user id as a path parameter)."""
    return "/users/" + quote(user_id, safe="")


@dataclass
class _Deadline:
    expires_at: float

    @classmethod
    def after(cls, seconds: float) -> _Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()


def _backoff(attempt: int) -> float:
    # "Full jitter" (AWS architecture blog): spreads retries of many pods over the window.
    return random.uniform(0, min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2**attempt))


def _reset_wait(response: httpx.Response) -> float | None:
    reset = response.headers.get("x-ratelimit-reset")
    try:
        return max(0.0, float(reset) - time.time()) if reset is not None else None
    except ValueError:
        return None


def _reset_at(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["x-ratelimit-reset"])
    except (KeyError, ValueError):
        return None


class ManagementToken:
    """The client-credentials token, cached in this process and in the shared store."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, store: SharedStore) -> None:
        self._settings = settings
        self._http = http
        self._store = store
        self._token: str | None = None
        self._expires_at = 0.0  # wall clock: the shared copy is read by other processes
        self._lock = asyncio.Lock()
        self._key = f"{settings.redis_key_prefix}auth0:mgmt-token:{settings.auth0_client_id}"

    def _usable(self, expires_at: float) -> bool:
        return expires_at - _TOKEN_REFRESH_MARGIN_SECONDS > time.time()

    async def get(self, deadline: _Deadline) -> str:
        if self._token is not None and self._usable(self._expires_at):
            return self._token
        async with self._lock:  # concurrent requests in this process share one fetch
            if self._token is not None and self._usable(self._expires_at):
                return self._token
            token, expires_at = await self._shared_or_fetch(deadline)
            self._token, self._expires_at = token, expires_at
            return token

    async def invalidate(self, token: str) -> None:
        """Auth0 rejected `token` (revoked or rotated credentials): drop it everywhere."""
        if self._token == token:
            self._token, self._expires_at = None, 0.0
        shared = await self._load_shared()
        if shared is not None and shared[0] == token:
            await self._store.delete(self._key)

    async def _load_shared(self) -> tuple[str, float] | None:
        raw = await self._store.get(self._key)
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            return str(entry["token"]), float(entry["expires_at"])
        except (ValueError, KeyError, TypeError):
            return None

    async def _shared_or_fetch(self, deadline: _Deadline) -> tuple[str, float]:
        async def usable_shared() -> tuple[str, float] | None:
            shared = await self._load_shared()
            return shared if shared is not None and self._usable(shared[1]) else None

        async def fetch_and_share() -> tuple[str, float]:
            token, expires_in = await self._fetch(deadline)
            expires_at = time.time() + expires_in
            entry = json.dumps({"token": token, "expires_at": expires_at}).encode()
            await self._store.set(self._key, entry, ttl_seconds=expires_in)
            return token, expires_at

        shared = await usable_shared()
        if shared is not None:
            return shared
        # Another pod fetching: wait briefly for its token rather than fetch a second.
        return await fill_once(
            self._store,
            self._key + ":lock",
            lock_seconds=5.0,
            wait_seconds=min(_TOKEN_WAIT_SECONDS, deadline.remaining() / 2),
            poll_seconds=0.05,
            read=usable_shared,
            fill=fetch_and_share,
        )

    async def _fetch(self, deadline: _Deadline) -> tuple[str, float]:
        settings = self._settings
        try:
            secret = settings.client_secret()
        except OSError as exc:  # a mount gone wrong: the operator must know, the caller gets 502
            log.error("AUTH0_CLIENT_SECRET_FILE could not be read", extra={"error": repr(exc)})
            raise Auth0Error("the client secret could not be read") from exc
        payload = {
            "grant_type": "client_credentials",
            "client_id": settings.auth0_client_id,
            "client_secret": secret,
            "audience": settings.management_audience,
        }

        async def attempt(number: int) -> httpx.Response | _Failure:
            started = time.perf_counter()
            try:
                with telemetry.operation(
                    "auth0",
                    TOKEN_OPERATION,
                    attributes=_attempt(settings, "POST", "/oauth/token", number),
                ) as call:
                    response = await self._http.post(
                        f"{settings.auth0_base_url}/oauth/token",
                        json=payload,
                        timeout=_timeout(settings, deadline),
                    )
                    _observe(call, TOKEN_OPERATION, response)
            except httpx.TimeoutException as exc:
                raise Auth0Timeout("token request timed out") from exc
            except httpx.HTTPError as exc:
                return _Failure(Auth0Error(f"token request failed: {exc!r}"), exc, _backoff(number))
            _account(started)
            status = response.status_code
            if status == 200:
                return response
            if status == 429:
                limited = Auth0RateLimited(max(1, round(_reset_wait(response) or 1)))
                return _Failure(limited, None, _backoff(number))
            if status >= 500:
                return _Failure(
                    Auth0Error(f"token endpoint answered {status}"), None, _backoff(number)
                )
            # Wrong credentials or grant: retrying cannot help, and the operator must know.
            log.error(
                "Auth0 refused the management token request",
                extra={"status": status, "body": response.text[:300]},
            )
            raise Auth0Error(f"token endpoint answered {status}")

        body = (await _retrying(settings, deadline, TOKEN_OPERATION, attempt)).json()
        return str(body["access_token"]), float(body.get("expires_in", 86400))


def _timeout(settings: Settings, deadline: _Deadline) -> httpx.Timeout:
    remaining = max(0.05, deadline.remaining())
    return httpx.Timeout(
        min(settings.auth0_read_timeout_seconds, remaining),
        connect=min(settings.auth0_connect_timeout_seconds, remaining),
    )


TOKEN_OPERATION = "POST /oauth/token"  # noqa: S105 (an operation name, not a secret)


def _attempt(settings: Settings, method: str, template: str, attempt: int) -> dict[str, str | int]:
    """An attempt's span attributes: the route as a template, never the URL (a user id, an
    email in a query), and how many times it was sent before (semantic conventions)."""
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "url.template": template,
        "server.address": settings.auth0_host,
    }
    if attempt:
        attributes["http.request.resend_count"] = attempt
    return attributes


def _outcome(status: int) -> str:
    if status < 300:
        return "ok"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "unauthorized" if status == 401 else "rejected"


def _observe(call: telemetry.Span, operation: str, response: httpx.Response) -> None:
    """An answer's status on its span, and the rate-limit headroom Auth0 reports with it."""
    status = response.status_code
    call.set("http.response.status_code", status)
    call.outcome(_outcome(status))
    if status == 429:
        telemetry.add("userapi.auth0.rate_limited", 1, {"userapi.auth0.operation": operation})
    labels = {"userapi.auth0.operation": operation}
    for header, instrument in (
        ("x-ratelimit-remaining", "userapi.auth0.rate_limit.remaining"),
        ("x-ratelimit-limit", "userapi.auth0.rate_limit.limit"),
    ):
        value = response.headers.get(header)
        if value is not None and value.isdigit():
            telemetry.add(instrument, int(value), labels)


async def _wait(operation: str, seconds: float, reason: str) -> None:
    """The pause before a retry, counted and shown in the trace as a span of its own."""
    telemetry.add(
        "userapi.auth0.retries", 1, {"userapi.auth0.operation": operation, "reason": reason}
    )
    with telemetry.span(
        "userapi.auth0.wait",
        {"userapi.auth0.operation": operation, "reason": reason, "userapi.wait_seconds": seconds},
    ):
        await asyncio.sleep(seconds)


def _account(started: float) -> None:
    ctx = context.current()
    if ctx is not None:
        ctx.add_auth0_time(time.perf_counter() - started)


class ManagementClient:
    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        store: SharedStore,
        budget: RateBudget | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        self._budget = budget  # None: AUTH0_MANAGEMENT_RATE_PER_SECOND unset, no shared budget
        self._base = f"{settings.auth0_base_url}/api/v2"
        self.token = ManagementToken(settings, http, store)

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The full Auth0 profile, or None when Auth0 says the user does not exist."""
        response = await self.request(
            "GET", _user_path(user_id), "/users/{id}", idempotent=True, priority=Priority.READ
        )
        if response.status_code == 404:
            return None
        return _json_object(response)

    async def list_users(
        self, *, q: str | None, page: int, per_page: int, sort: str | None, fields: str
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "page": page,
            "per_page": per_page,
            "include_totals": "true",
            "search_engine": "v3",
            "fields": fields,
            "include_fields": "true",
        }
        if q:
            params["q"] = q
        if sort:
            params["sort"] = sort
        return _json_object(
            await self.request(
                "GET", "/users", "/users", idempotent=True, params=params, priority=Priority.LIST
            )
        )

    async def create_user(self, body: dict[str, Any]) -> dict[str, Any]:
        # Not idempotent: a lost answer may hide a created user, so no retry on 5xx/timeouts.
        return _json_object(
            await self.request("POST", "/users", "/users", idempotent=False, json_body=body)
        )

    async def users_by_email(self, email: str) -> list[dict[str, Any]]:
        response = await self.request(
            "GET", "/users-by-email", "/users-by-email", idempotent=True, params={"email": email}
        )
        body = response.json()
        return [u for u in body if isinstance(u, dict)] if isinstance(body, list) else []

    async def update_user(self, user_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        # PATCH sets fields to given values: repeating it is harmless, so it may be retried.
        response = await self.request(
            "PATCH",
            _user_path(user_id),
            "/users/{id}",
            idempotent=True,
            json_body=body,
        )
        return None if response.status_code == 404 else _json_object(response)

    async def delete_user(self, user_id: str) -> None:
        await self.request("DELETE", _user_path(user_id), "/users/{id}", idempotent=True)

    async def request(
        self,
        method: str,
        path: str,
        template: str,
        *,
        idempotent: bool,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        priority: Priority = Priority.WRITE,
    ) -> httpx.Response:
        """One Management API call within the request budget; 2xx and 404 are returned.

        429s are retried for every method (Auth0 did nothing); 5xx and network errors only when
        the call is idempotent, since a lost answer to a POST may hide a user created anyway.
        `template` is `path` with its values as placeholders (/users/{id}), for telemetry.
        With a shared budget each attempt first takes a token, waiting by `priority` within
        the time budget; none in time raises Auth0RateLimited before anything is sent.
        """
        settings = self._settings
        operation = f"{method} /api/v2{template}"
        deadline = _Deadline.after(settings.auth0_request_budget_seconds)
        reauthenticated = False

        async def attempt(number: int) -> httpx.Response | _Failure:
            nonlocal reauthenticated
            while True:
                token = await self.token.get(deadline)
                if self._budget is not None:
                    # The call itself needs time too: a token granted at the deadline would
                    # only turn a 503 into a 504.
                    reserve = min(
                        settings.auth0_read_timeout_seconds,
                        settings.auth0_request_budget_seconds / 4,
                    )
                    await self._budget.acquire(priority, deadline.remaining() - reserve)
                started = time.perf_counter()
                try:
                    with telemetry.operation(
                        "auth0",
                        operation,
                        attributes=_attempt(settings, method, "/api/v2" + template, number),
                    ) as call:
                        response = await self._http.request(
                            method,
                            self._base + path,
                            params=params,
                            json=json_body,
                            headers={"Authorization": f"Bearer {token}"},
                            timeout=_timeout(settings, deadline),
                        )
                        _observe(call, operation, response)
                except httpx.TimeoutException as exc:
                    _account(started)
                    timeout = Auth0Timeout(f"{operation} timed out")
                    return _Failure(timeout, exc, _backoff(number) if idempotent else None)
                except httpx.HTTPError as exc:
                    _account(started)
                    failed = Auth0Error(f"{operation} failed: {exc!r}")
                    return _Failure(failed, exc, _backoff(number) if idempotent else None)
                _account(started)
                status = response.status_code
                if self._budget is not None and (
                    status == 429 or response.headers.get("x-ratelimit-remaining") == "0"
                ):
                    await self._budget.hold(_reset_at(response))
                if status < 300 or status == 404:
                    return response
                if status == 401 and not reauthenticated:
                    # Revoked or rotated credentials: one fresh token, at once and uncounted.
                    reauthenticated = True
                    telemetry.add(
                        "userapi.auth0.retries",
                        1,
                        {"userapi.auth0.operation": operation, "reason": "token_rejected"},
                    )
                    await self.token.invalidate(token)
                    continue
                cause = Exception(f"HTTP {status}")
                if status == 429:
                    reset_wait = _reset_wait(response)
                    limited = Auth0RateLimited(max(1, round(reset_wait or 1)))
                    # Waiting for the bucket to refill beats guessing, when it fits the budget.
                    if reset_wait is not None and reset_wait < deadline.remaining():
                        return _Failure(limited, cause, reset_wait + random.uniform(0, 0.1))
                    return _Failure(limited, cause, _backoff(number))
                if status >= 500:
                    answered = Auth0Error(f"{operation} answered {status}", status)
                    return _Failure(answered, cause, _backoff(number) if idempotent else None)
                raise Auth0Rejected(status, _error_body(response))

        return await _retrying(settings, deadline, operation, attempt)


@dataclass(frozen=True)
class _Failure:
    """An attempt that got no usable answer, and how long to wait before the next one (None:
    the next one could do harm, e.g. a POST whose answer was lost)."""

    error: Auth0Error
    cause: BaseException | None
    wait: float | None


async def _retrying(
    settings: Settings,
    deadline: _Deadline,
    operation: str,
    attempt: Callable[[int], Awaitable[httpx.Response | _Failure]],
) -> httpx.Response:
    """The one retry policy of the token request and every Management API call: `attempt(n)`
    again after its wait, while the failure allows it, AUTH0_MAX_RETRIES are not used up and
    the wait fits in the time budget (`deadline`)."""
    number = 0
    while True:
        outcome = await attempt(number)
        if isinstance(outcome, httpx.Response):
            return outcome
        wait = outcome.wait
        if wait is None or number >= settings.auth0_max_retries or wait >= deadline.remaining():
            raise outcome.error from outcome.cause
        log.info(
            "retrying Auth0 call",
            extra={"call": operation, "attempt": number + 1, "wait_s": round(wait, 3)},
        )
        await _wait(operation, wait, _retry_reason(outcome.error))
        number += 1


def _retry_reason(error: Auth0Error) -> str:
    if isinstance(error, Auth0RateLimited):
        return "rate_limited"
    return "timeout" if isinstance(error, Auth0Timeout) else "error"


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise Auth0Error("Auth0 answered with a body that is not JSON") from exc
    except RecursionError as exc:
        # A profile nested deeper than the parser recurses (metadata written around this API):
        # a 502 for this read, never a 500. Shallower bad metadata is cut by allowlisted().
        raise Auth0Error("Auth0 answered with a profile nested too deep to read") from exc
    if not isinstance(body, dict):
        raise Auth0Error("Auth0 answered with an unexpected body")
    return body


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"message": response.text[:200]}
    return body if isinstance(body, dict) else {"message": str(body)[:200]}
