"""The contract between an endpoint module and the registry (userapi/endpoints/__init__.py):
each module starts with `ENDPOINT = Endpoint(...)`, adds its routes to `ENDPOINT.router`, and
that declaration is all the registry reads.

The declaration is also the one statement of who may call the endpoint: its routes take the
caller from `ENDPOINT.caller`, which enforces `permission` (or lets a user act on themselves,
for a `self_service` endpoint), so a handler cannot forget or restate the check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request

from userapi.adapters.access_tokens import Permission, Principal
from userapi.platform.errors import forbidden
from userapi.web.dependencies import PrincipalDep
from userapi.web.direct_routes import DirectGet, DirectHandler
from userapi.web.middleware import MAX_BODY_BYTES


class Endpoint:
    def __init__(
        self,
        name: str,
        permission: Permission | None,
        *,
        self_service: bool = False,
        tags: Sequence[str] = ("users",),
        max_body_bytes: int = MAX_BODY_BYTES,
        management_api: bool = True,
        database: bool = True,
    ) -> None:
        # The registry's key: the Knative Service's name and `userapi serve`'s argument.
        self.name = name
        # What a caller needs (README's API table shows it); None: not an Auth0 access token
        # (auth0-events checks Auth0's shared stream secret instead).
        self.permission = permission
        # A user may act on themselves (`me`, or their own id in {user_id}) without it.
        self.self_service = self_service
        self.router = APIRouter(tags=list(tags))
        # Hot GET routes answered without FastAPI's parameter solving (web/direct_routes.py).
        self.direct_routes: tuple[DirectGet, ...] = ()
        # The request body bound; only an endpoint whose callers send more raises it.
        self.max_body_bytes = max_body_bytes
        # Calls Auth0's Management API, so needs the client secret; an endpoint that does not
        # is neither given it (the chart mounts no client-secret there) nor refused without it.
        self.management_api = management_api
        # Reads or writes PostgreSQL: only then does a new process open its connection to the
        # sidecar before its first request (Resources.warm).
        self.database = database
        # `Annotated[Principal, ENDPOINT.caller]`: the authorized caller, solved by FastAPI
        # before any other parameter is judged (401, then 403, then 400).
        self.caller: Any = Depends(self.authorize)

    @property
    def shared_credentials(self) -> bool:
        """Reads the JWKS or the Management token other pods sealed in Redis, so needs
        SHARED_CACHE_KEY: an endpoint that verifies no access token and never calls the
        Management API is not given the key (the chart mounts none there)."""
        return self.permission is not None or self.management_api

    async def authorize(self, request: Request, principal: PrincipalDep) -> Principal:
        """The caller, if it may call this endpoint for the user the path names, and is within
        its quota (checked here: after authentication, before any body is read)."""
        if not (
            self.self_service and request.path_params.get("user_id") in ("me", principal.subject)
        ):
            self.require(principal)
        quota = request.app.state.resources.quota
        if quota is not None:
            waiting = quota.admit(self.name, principal)
            if waiting is not None:
                await waiting
        return principal

    def require(self, principal: Principal) -> None:
        """403 unless the caller holds the endpoint's permission: for what even a user acting
        on themselves may not do without it (update-user's restricted fields)."""
        if self.permission is None:
            raise TypeError(f"{self.name} is not called with an access token")
        if self.permission not in principal.permissions:
            raise forbidden(self.permission)

    def direct_get(self, path: str) -> Callable[[DirectHandler], DirectHandler]:
        """Decorates a `DirectHandler` answering `GET path` outside FastAPI's routing."""

        def register(handler: DirectHandler) -> DirectHandler:
            self.direct_routes = (*self.direct_routes, DirectGet(path, handler))
            return handler

        return register
