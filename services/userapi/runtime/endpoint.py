"""The contract between an endpoint module and the registry (userapi/endpoints.py): each module
declares `ENDPOINT = Endpoint(...)`, and that declaration is all the registry reads."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter

from userapi.runtime.auth import Permission
from userapi.runtime.direct import DirectGet
from userapi.runtime.middleware import MAX_BODY_BYTES


@dataclass(frozen=True)
class Endpoint:
    # The registry's key: the Knative Service's name and `userapi serve`'s argument.
    name: str
    router: APIRouter
    # What a caller needs (README's API table shows it); None: not an Auth0 access token
    # (auth0-events checks Auth0's shared stream secret instead).
    permission: Permission | None
    # Hot GET routes answered without FastAPI's parameter solving (runtime/direct.py).
    direct_routes: tuple[DirectGet, ...] = ()
    # The request body bound; only an endpoint whose callers send more raises it.
    max_body_bytes: int = MAX_BODY_BYTES
    # Calls Auth0's Management API, so needs the client secret; an endpoint that does not is
    # neither given it (the chart mounts no client-secret there) nor refused without it.
    management_api: bool = True
