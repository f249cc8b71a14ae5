"""The Emulator: Auth0's discovery, JWKS, /oauth/token and Management API v2 users on Starlette.

Every Management API request goes through the same steps, in Auth0's order as far as a client
can observe it: counted, delayed by `latency_ms`, possibly failed by an injected fault, charged
to the rate-limit bucket (429 when empty), authenticated (401) and authorized (403), then
handled. Each answer carries x-ratelimit-limit / -remaining / -reset.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from userapi.emulator import control, management
from userapi.emulator.errors import REASONS, ManagementError, management_error_body
from userapi.emulator.keys import KeyRing
from userapi.emulator.limits import Fault, FaultKind, Faults, TokenBucket
from userapi.emulator.oauth import token_endpoint
from userapi.emulator.users import UserStore

ROUTE_OAUTH = "POST /oauth/token"
ROUTE_JWKS = "GET /.well-known/jwks.json"
ROUTE_DISCOVERY = "GET /.well-known/openid-configuration"
ROUTE_GET_USER = "GET /api/v2/users/{id}"
ROUTE_LIST_USERS = "GET /api/v2/users"
ROUTE_USERS_BY_EMAIL = "GET /api/v2/users-by-email"
ROUTE_CREATE_USER = "POST /api/v2/users"
ROUTE_UPDATE_USER = "PATCH /api/v2/users/{id}"
ROUTE_DELETE_USER = "DELETE /api/v2/users/{id}"
ROUTE_NAMES = (
    ROUTE_OAUTH, ROUTE_JWKS, ROUTE_DISCOVERY, ROUTE_GET_USER, ROUTE_LIST_USERS,
    ROUTE_USERS_BY_EMAIL, ROUTE_CREATE_USER, ROUTE_UPDATE_USER, ROUTE_DELETE_USER,
)  # fmt: skip
HANG_SECONDS = 300.0

# The dev client: the machine-to-machine app and API every emulator knows unless configured
# otherwise. `userapi dev`, the tests and bench/ use these; the chart's dev Secret
# (helm/userapi/templates/dev-secrets.yaml) holds the same secret for a local cluster.
DEV_CLIENT_ID = "userapi-m2m"
DEV_CLIENT_SECRET = "userapi-dev-secret"  # noqa: S105 - a published dev credential
DEV_AUDIENCE = "https://userapi.local/api"

Handler = Callable[[Request], Awaitable[Response]]
StoreHandler = Callable[[UserStore, Request], Awaitable[Response]]


@dataclass
class EmulatorConfig:
    base_url: str  # e.g. "http://127.0.0.1:8765"; the issuer is base_url + "/"
    clients: dict[str, str] = field(default_factory=lambda: {DEV_CLIENT_ID: DEV_CLIENT_SECRET})
    api_audiences: list[str] = field(default_factory=lambda: [DEV_AUDIENCE])
    seed_users: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: float = 0.0  # added to every Management API request
    rate_limit_burst: int = 1000
    rate_limit_per_second: float = 1000.0
    token_expires_in: int = 86400  # management API tokens
    access_token_expires_in: int = 3600  # tokens for the api_audiences
    # The permissions defined on the api_audiences, all of them in the dev client's grant.
    api_permissions: list[str] = field(
        default_factory=lambda: ["read:users", "create:users", "update:users", "delete:users"]
    )
    # The API's "Enable RBAC" with "Add Permissions in the Access Token", as docs/deploying.md
    # asks operators to set them. Off (Auth0's default for a new API), a user token's scope is
    # whatever the login asked for, and it has no permissions claim.
    rbac: bool = True


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
        self.rbac = config.rbac
        self._counters: Counter[str] = Counter()
        # (UNIX time of arrival, route, status) of the latest Management API requests: how a
        # test sees the rate it was sent at and the 429s it met.
        self.management_log: deque[tuple[float, str, int]] = deque(maxlen=20000)
        self.app = Starlette(routes=self._routes())

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        """The user store by user_id (the live objects: tests may read, and seed by writing)."""
        return self.store.users

    # Tokens ---------------------------------------------------------------------------------

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        """Sign arbitrary claims with the current key (RS256, its kid); headers override."""
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
        """A user access token as Auth0 issues them (aud: the API and /userinfo)."""
        now = int(time.time())
        lifetime = self.config.access_token_expires_in if expires_in is None else expires_in
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": [audience or self.config.api_audiences[0], self.config.base_url + "/userinfo"],
            "iat": now,
            "exp": now + lifetime,
            "azp": azp or next(iter(self.config.clients), "emulator"),
            "scope": "openid profile email" if scope is None else scope,
            "permissions": list(permissions or []),
        }
        claims.update(extra_claims or {})
        return self.sign(claims)

    # Test controls ----------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Requests that reached each route (faulted and rate-limited ones included)."""
        return {name: count for name, count in self._counters.items() if count}

    def reset_stats(self) -> None:
        self._counters.clear()
        self.management_log.clear()

    def add_fault(
        self,
        route: str | Fault = "*",
        *,
        kind: FaultKind = "status",
        status: int = 503,
        times: int | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> Fault:
        """Fail the next `times` requests to `route` (a route name or "*"; None: until cleared)."""
        if isinstance(route, Fault):
            fault = route
        else:
            if route != "*" and route not in ROUTE_NAMES:
                raise ValueError(f"unknown route {route!r}; one of {', '.join(ROUTE_NAMES)}")
            fault = Fault(route, kind, status, times, dict(headers or {}), body)
        self.faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults.clear()

    def reset(self) -> None:
        """Zero the counters, clear faults, refill the rate-limit bucket and restore RBAC."""
        self.reset_stats()
        self.clear_faults()
        self.bucket.fill()
        self.rbac = self.config.rbac

    def set_rate_limit(self, burst: int, per_second: float) -> None:
        self.bucket = TokenBucket(burst, per_second)

    # Request plumbing ---------------------------------------------------------------------------

    async def _fault_response(self, fault: Fault, request: Request, management: bool) -> Response:
        if fault.kind == "hang":
            await _hang(request)
            return JSONResponse(management_error_body(504, "Gateway Timeout"), status_code=504)
        headers = self.bucket.headers() if management else {}
        if fault.status == 429 and "x-ratelimit-reset" not in fault.headers:
            headers |= {
                "x-ratelimit-limit": str(self.bucket.burst),
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(int(time.time()) + 1),
            }
        headers |= fault.headers
        if fault.body is not None:
            return JSONResponse(fault.body, status_code=fault.status, headers=headers)
        if fault.status == 204 or fault.status < 200:
            return Response(status_code=fault.status, headers=headers)
        if management:
            body = _default_fault_body(fault.status)
        else:
            body = _default_oauth_fault_body(fault.status)
        return JSONResponse(body, status_code=fault.status, headers=headers)

    def _authorize(self, request: Request, scope: str) -> ManagementError | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return ManagementError(401, "Invalid token")
        try:
            claims = self.keys.verify(token.strip(), self.management_audience, self.issuer)
        except jwt.PyJWTError:
            return ManagementError(401, "Invalid token")
        if scope not in str(claims.get("scope", "")).split():
            message = f"Insufficient scope, expected any of: {scope}"
            return ManagementError(403, message, "insufficient_scope")
        return None

    def _management(self, name: str, scope: str, handler: StoreHandler) -> Handler:
        async def endpoint(request: Request) -> Response:
            self._counters[name] += 1
            arrived = time.time()
            if self.latency_ms > 0:
                await asyncio.sleep(self.latency_ms / 1000)
            fault = self.faults.take(name)
            if fault is not None:
                faulted = await self._fault_response(fault, request, management=True)
                self.management_log.append((arrived, name, faulted.status_code))
                return faulted
            allowed, headers = self.bucket.take()
            if not allowed:
                self.management_log.append((arrived, name, 429))
                body = management_error_body(
                    429, "Global limit has been reached", "too_many_requests"
                )
                return JSONResponse(body, status_code=429, headers=headers)
            error = self._authorize(request, scope)
            if error is None:
                try:
                    response = await handler(self.store, request)
                except ManagementError as exc:
                    error = exc
            if error is not None:
                response = JSONResponse(error.body(), status_code=error.status)
            response.headers.update(headers)
            self.management_log.append((arrived, name, response.status_code))
            return response

        return endpoint

    def _plain(self, name: str, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            self._counters[name] += 1
            fault = self.faults.take(name)
            if fault is not None:
                return await self._fault_response(fault, request, management=False)
            return await handler(request)

        return endpoint

    def _routes(self) -> list[Route]:
        m, p = self._management, self._plain
        users = "/api/v2/users/{user_id:path}"
        return [
            Route("/.well-known/openid-configuration", p(ROUTE_DISCOVERY, self._discovery)),
            Route("/.well-known/jwks.json", p(ROUTE_JWKS, self._jwks)),
            Route("/oauth/token", p(ROUTE_OAUTH, self._token), methods=["POST"]),
            Route("/api/v2/users-by-email",
                  m(ROUTE_USERS_BY_EMAIL, "read:users", management.users_by_email)),
            Route("/api/v2/users", m(ROUTE_LIST_USERS, "read:users", management.list_users)),
            Route("/api/v2/users", m(ROUTE_CREATE_USER, "create:users", management.create_user),
                  methods=["POST"]),
            Route(users, m(ROUTE_GET_USER, "read:users", management.get_user)),
            Route(users, m(ROUTE_UPDATE_USER, "update:users", management.update_user),
                  methods=["PATCH"]),
            Route(users, m(ROUTE_DELETE_USER, "delete:users", management.delete_user),
                  methods=["DELETE"]),
            *control.routes(self),
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
                "revocation_endpoint": f"{base}/oauth/revoke",
                "scopes_supported": ["openid", "profile", "offline_access", "name", "email"],
                "response_types_supported": ["code", "token", "id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["HS256", "RS256", "PS256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "grant_types_supported": ["client_credentials", "password"],
            }
        )

    async def _jwks(self, _: Request) -> Response:
        return JSONResponse(self.keys.jwks(), headers={"Cache-Control": "public, max-age=15"})

    async def _token(self, request: Request) -> Response:
        return await token_endpoint(self, request)


async def _hang(request: Request) -> None:
    """Answer nothing until the client hangs up (or HANG_SECONDS pass)."""
    with anyio.move_on_after(HANG_SECONDS):
        # After the body, receive() only returns once the client has disconnected.
        while (await request.receive())["type"] != "http.disconnect":
            pass


def _default_fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        return management_error_body(429, "Global limit has been reached", "too_many_requests")
    return management_error_body(status, REASONS.get(status, "Error"))


def _default_oauth_fault_body(status: int) -> dict[str, Any]:
    # The Authentication API (/oauth/token) answers errors in the OAuth shape.
    if status == 429:
        return {"error": "too_many_requests", "error_description": "Global limit has been reached"}
    return {"error": "server_error", "error_description": REASONS.get(status, "Error")}
