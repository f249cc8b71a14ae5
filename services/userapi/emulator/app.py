"""The emulator's HTTP surface: Auth0's discovery, /oauth/token and Management API v2 users.

Behaviour follows Auth0's documentation (see shared reference auth0.md): error bodies, status
codes, x-ratelimit-* headers, metadata merging, paging limits. Routes under /__emulator/ are
NOT Auth0: they are the controls tests and benchmarks use (counters, latency, faults, key
rotation, minting tokens).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from userapi.emulator.keys import KeyRing
from userapi.emulator.limits import Fault, Faults, TokenBucket
from userapi.emulator.users import ManagementError, UserStore, project

MANAGEMENT_SCOPES = "read:users update:users delete:users create:users"
MAX_PER_PAGE = 50
MAX_REACHABLE = 1000
_HANG_SECONDS = 300.0

_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip


def auth0_error(status: int, message: str, error_code: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "statusCode": status,
        "error": _REASONS.get(status, "Error"),
        "message": message,
    }
    if error_code:
        body["errorCode"] = error_code
    return body


def _default_fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        return auth0_error(429, "Global limit has been reached", "too_many_requests")
    return auth0_error(status, _REASONS.get(status, "Error"))


@dataclass
class EmulatorConfig:
    base_url: str
    clients: dict[str, str] = field(default_factory=lambda: {"userapi-m2m": "userapi-dev-secret"})
    api_audiences: list[str] = field(default_factory=lambda: ["https://userapi.local/api"])
    seed_users: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: float = 0.0
    rate_limit_burst: int = 1000
    rate_limit_per_second: float = 1000.0
    token_expires_in: int = 86400
    access_token_expires_in: int = 3600


class Emulator:
    def __init__(self, config: EmulatorConfig) -> None:
        config.base_url = config.base_url.rstrip("/")
        self.config = config
        self.issuer = config.base_url + "/"
        self.management_audience = config.base_url + "/api/v2/"
        self.keys = KeyRing()
        self.store = UserStore()
        self.store.load(config.seed_users)
        self.bucket = TokenBucket(config.rate_limit_burst, config.rate_limit_per_second)
        self.faults = Faults()
        self.latency_ms = config.latency_ms
        self._counters: Counter[str] = Counter()
        self.app = Starlette(routes=self._routes())

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        return self.store.users

    # Tokens ---------------------------------------------------------------------------------

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        return self.keys.sign(claims, headers)

    def rotate_keys(self) -> None:
        self.keys.rotate()

    def mint_access_token(
        self,
        sub: str,
        *,
        audience: str | None = None,
        permissions: list[str] | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        extra_claims: dict[str, Any] | None = None,
        azp: str | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": [audience or self.config.api_audiences[0], self.config.base_url + "/userinfo"],
            "iat": now,
            "exp": now + (expires_in or self.config.access_token_expires_in),
            "azp": azp or next(iter(self.config.clients), "emulator"),
            "scope": scope if scope is not None else "openid profile email",
            "permissions": list(permissions or []),
        }
        claims.update(extra_claims or {})
        return self.sign(claims)

    # Test controls ----------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return dict(self._counters)

    def reset_stats(self) -> None:
        self._counters.clear()

    def add_fault(self, fault: Fault) -> None:
        self.faults.add(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    # Plumbing -------------------------------------------------------------------------------

    async def _enter(self, name: str, request: Request, management: bool) -> Response | None:
        """Count, inject faults, add latency, rate-limit and authenticate; None means proceed."""
        self._counters[name] += 1
        fault = self.faults.take(name)
        if fault is not None:
            if fault.kind == "hang":
                deadline = time.monotonic() + _HANG_SECONDS
                # Polls for the client hanging up so a hung request does not outlive its caller.
                while time.monotonic() < deadline and not await request.is_disconnected():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                return Response(status_code=504)
            headers = dict(fault.headers)
            if fault.status == 429 and "x-ratelimit-reset" not in headers:
                headers["x-ratelimit-reset"] = str(int(time.time()) + 1)
                headers.setdefault("x-ratelimit-limit", str(self.bucket.burst))
                headers.setdefault("x-ratelimit-remaining", "0")
            body = fault.body if fault.body is not None else _default_fault_body(fault.status)
            return JSONResponse(body, status_code=fault.status, headers=headers)
        if not management:
            return None
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        allowed, headers = self.bucket.take()
        request.state.ratelimit = headers
        if not allowed:
            body = auth0_error(429, "Global limit has been reached", "too_many_requests")
            return JSONResponse(body, status_code=429, headers=headers)
        return None

    def _scopes(self, request: Request) -> set[str] | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            claims = self.keys.verify(token, self.management_audience, self.issuer)
        except jwt.PyJWTError:
            return None
        return set(str(claims.get("scope", "")).split())

    def _management(
        self, name: str, scope: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            early = await self._enter(name, request, management=True)
            if early is not None:
                return early
            headers = request.state.ratelimit
            scopes = self._scopes(request)
            if scopes is None:
                return JSONResponse(auth0_error(401, "Invalid token"), 401, headers=headers)
            if scope not in scopes:
                body = auth0_error(
                    403, f"Insufficient scope, expected any of: {scope}", "insufficient_scope"
                )
                return JSONResponse(body, 403, headers=headers)
            try:
                response = await handler(request)
            except ManagementError as exc:
                body = auth0_error(exc.status, exc.message, exc.error_code)
                return JSONResponse(body, exc.status, headers=headers)
            response.headers.update(headers)
            return response

        return endpoint

    def _plain(
        self, name: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            early = await self._enter(name, request, management=False)
            return early if early is not None else await handler(request)

        return endpoint

    def _routes(self) -> list[Route]:
        m, p = self._management, self._plain
        return [
            Route("/.well-known/openid-configuration",
                  p("GET /.well-known/openid-configuration", self._discovery)),
            Route("/.well-known/jwks.json", p("GET /.well-known/jwks.json", self._jwks)),
            Route("/oauth/token", p("POST /oauth/token", self._token), methods=["POST"]),
            Route("/api/v2/users-by-email",
                  m("GET /api/v2/users-by-email", "read:users", self._users_by_email)),
            Route("/api/v2/users", m("GET /api/v2/users", "read:users", self._list_users)),
            Route("/api/v2/users",
                  m("POST /api/v2/users", "create:users", self._create_user), methods=["POST"]),
            Route("/api/v2/users/{user_id:path}",
                  m("GET /api/v2/users/{id}", "read:users", self._get_user)),
            Route("/api/v2/users/{user_id:path}",
                  m("PATCH /api/v2/users/{id}", "update:users", self._update_user),
                  methods=["PATCH"]),
            Route("/api/v2/users/{user_id:path}",
                  m("DELETE /api/v2/users/{id}", "delete:users", self._delete_user),
                  methods=["DELETE"]),
            Route("/__emulator/stats", self._ctl_stats),
            Route("/__emulator/reset", self._ctl_reset, methods=["POST"]),
            Route("/__emulator/latency", self._ctl_latency, methods=["PUT"]),
            Route("/__emulator/faults", self._ctl_faults, methods=["POST", "DELETE"]),
            Route("/__emulator/rotate-keys", self._ctl_rotate, methods=["POST"]),
            Route("/__emulator/tokens", self._ctl_tokens, methods=["POST"]),
            Route("/__emulator/sign", self._ctl_sign, methods=["POST"]),
        ]  # fmt: skip

    # Auth0 routes -------------------------------------------------------------------------------

    async def _discovery(self, _: Request) -> Response:
        base = self.config.base_url
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/oauth/token",
                "userinfo_endpoint": f"{base}/userinfo",
                "jwks_uri": f"{base}/.well-known/jwks.json",
                "response_types_supported": ["code", "token", "id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["HS256", "RS256"],
                "grant_types_supported": ["client_credentials", "password"],
            }
        )

    async def _jwks(self, _: Request) -> Response:
        return JSONResponse(self.keys.jwks(), headers={"Cache-Control": "public, max-age=15"})

    async def _token(self, request: Request) -> Response:
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                params = await request.json()
            else:
                params = dict(await request.form())
        except (ValueError, UnicodeDecodeError):
            params = None
        if not isinstance(params, dict):
            return _oauth_error(400, "invalid_request", "Malformed request body.")
        grant = params.get("grant_type")
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        if grant not in ("client_credentials", "password"):
            return _oauth_error(403, "unsupported_grant_type", f"Unsupported grant type: {grant}")
        known_secret = self.config.clients.get(str(client_id))
        if known_secret is None or not secrets.compare_digest(known_secret, str(client_secret)):
            return _oauth_error(401, "access_denied", "Unauthorized")
        audience = str(params.get("audience") or "")
        requested = str(params.get("scope") or "").split()
        if grant == "client_credentials":
            if audience == self.management_audience:
                return self._token_response(
                    f"{client_id}@clients", audience, MANAGEMENT_SCOPES.split(), str(client_id),
                    self.config.token_expires_in, extra={"gty": "client-credentials"},
                )  # fmt: skip
            if audience in self.config.api_audiences:
                return self._token_response(
                    f"{client_id}@clients", audience, requested, str(client_id),
                    self.config.access_token_expires_in, extra={"gty": "client-credentials"},
                )  # fmt: skip
            return _oauth_error(403, "access_denied", f"Service not found: {audience}")
        if audience not in self.config.api_audiences:
            return _oauth_error(403, "access_denied", f"Service not found: {audience}")
        matches = self.store.by_email(str(params.get("username", "")))
        user = matches[0] if matches else None
        password = self.store.passwords.get(user["user_id"]) if user else None
        if (
            user is None
            or password is None
            or not secrets.compare_digest(password, str(params.get("password", "")))
        ):
            return _oauth_error(403, "invalid_grant", "Wrong email or password.")
        granted = self.store.permissions.get(user["user_id"], [])
        return self._token_response(
            user["user_id"], audience, granted, str(client_id), self.config.access_token_expires_in,
            scope=" ".join(requested) or "openid profile email",
        )  # fmt: skip

    def _token_response(
        self,
        sub: str,
        audience: str,
        permissions: list[str],
        client_id: str,
        expires_in: int,
        *,
        extra: dict[str, Any] | None = None,
        scope: str | None = None,
    ) -> Response:
        now = int(time.time())
        scope_text = scope if scope is not None else " ".join(permissions)
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "aud": audience,
            "iat": now,
            "exp": now + expires_in,
            "azp": client_id,
            "scope": scope_text,
            "permissions": permissions,
            **(extra or {}),
        }
        return JSONResponse(
            {
                "access_token": self.sign(claims),
                "token_type": "Bearer",
                "expires_in": expires_in,
                "scope": scope_text,
            }
        )

    async def _get_user(self, request: Request) -> Response:
        user = self.store.get(unquote(request.path_params["user_id"]))
        fields, include = _fields(request)
        return JSONResponse(project(user, fields, include))

    async def _list_users(self, request: Request) -> Response:
        query = request.query_params
        try:
            page = int(query.get("page", "0"))
            per_page = int(query.get("per_page", str(MAX_PER_PAGE)))
        except ValueError as exc:
            raise ManagementError(
                400, "page and per_page must be integers", "invalid_query_string"
            ) from exc
        if page < 0 or not 0 < per_page <= MAX_PER_PAGE:
            raise ManagementError(
                400,
                f"Query validation error: 'per_page' must be between 1 and {MAX_PER_PAGE}.",
                "invalid_query_string",
            )
        if page * per_page >= MAX_REACHABLE:
            raise ManagementError(
                400, "You can only page through the first 1000 records.", "invalid_paging"
            )
        found = self.store.search(query.get("q"), query.get("sort"))
        reachable = found[:MAX_REACHABLE]
        window = reachable[page * per_page : (page + 1) * per_page]
        fields, include = _fields(request)
        users = [project(u, fields, include) for u in window]
        if query.get("include_totals", "false").lower() == "true":
            return JSONResponse(
                {
                    "start": page * per_page,
                    "limit": per_page,
                    "length": len(users),
                    "total": len(found),
                    "users": users,
                }
            )
        return JSONResponse(users)

    async def _users_by_email(self, request: Request) -> Response:
        email = request.query_params.get("email")
        if not email:
            raise ManagementError(
                400,
                "Query validation error: 'Missing required property: email'.",
                "invalid_query_string",
            )
        fields, include = _fields(request)
        return JSONResponse([project(u, fields, include) for u in self.store.by_email(email)])

    async def _create_user(self, request: Request) -> Response:
        return JSONResponse(self.store.create(await _json_body(request)), status_code=201)

    async def _update_user(self, request: Request) -> Response:
        user_id = unquote(request.path_params["user_id"])
        return JSONResponse(self.store.update(user_id, await _json_body(request)))

    async def _delete_user(self, request: Request) -> Response:
        self.store.delete(unquote(request.path_params["user_id"]))
        return Response(status_code=204)

    # Control routes -----------------------------------------------------------------------------

    async def _ctl_stats(self, _: Request) -> Response:
        return JSONResponse({"requests": self.stats()})

    async def _ctl_reset(self, _: Request) -> Response:
        self.reset_stats()
        self.clear_faults()
        return JSONResponse({"ok": True})

    async def _ctl_latency(self, request: Request) -> Response:
        body = await request.json()
        self.latency_ms = float(body["latency_ms"])
        return JSONResponse({"latency_ms": self.latency_ms})

    async def _ctl_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_faults()
            return JSONResponse({"ok": True})
        body = await request.json()
        try:
            self.add_fault(
                Fault(
                    route=str(body.get("route", "*")),
                    kind=str(body.get("kind", "status")),
                    status=int(body.get("status", 503)),
                    times=body.get("times"),
                    headers={str(k): str(v) for k, v in (body.get("headers") or {}).items()},
                    body=body.get("body"),
                )
            )
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    async def _ctl_rotate(self, _: Request) -> Response:
        self.rotate_keys()
        return JSONResponse({"kid": self.keys.current.kid})

    async def _ctl_tokens(self, request: Request) -> Response:
        body = await request.json()
        token = self.mint_access_token(
            str(body["sub"]),
            audience=body.get("audience"),
            permissions=body.get("permissions"),
            scope=body.get("scope"),
            expires_in=body.get("expires_in"),
            extra_claims=body.get("claims"),
        )
        return JSONResponse({"access_token": token})

    async def _ctl_sign(self, request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"token": self.sign(body["claims"], headers=body.get("headers"))})


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _fields(request: Request) -> tuple[str | None, bool]:
    include = request.query_params.get("include_fields", "true").lower() != "false"
    return request.query_params.get("fields"), include


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > 1_000_000:
        raise ManagementError(413, "Payload too large (1 MB max).", "payload_too_large")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ManagementError(400, "Invalid JSON body.", "invalid_body") from exc
    if not isinstance(body, dict):
        raise ManagementError(
            400, "Payload validation error: 'Expected type object'.", "invalid_body"
        )
    return body
