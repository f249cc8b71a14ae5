"""The endpoint registry: name (the Knative Service name) -> the module that declares it.

Each module declares `ENDPOINT = Endpoint(...)` (web/endpoint.py): its router, direct
routes, body bound and permission. That declaration is all the registry reads. Kept as strings
so that serving one endpoint imports that module only. docs/adding-an-endpoint.md lists what
else a new endpoint touches.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp

    from userapi.platform.settings import Settings
    from userapi.web.endpoint import Endpoint

ENDPOINTS: dict[str, str] = {
    "get-user": "userapi.endpoints.get_user",
    "list-users": "userapi.endpoints.list_users",
    "create-user": "userapi.endpoints.create_user",
    "update-user": "userapi.endpoints.update_user",
    "delete-user": "userapi.endpoints.delete_user",
    "auth0-events": "userapi.endpoints.auth0_events",
}


def load(name: str) -> Endpoint:
    """The declaration of endpoint `name`, importing its module (and nothing else)."""
    try:
        module_name = ENDPOINTS[name]
    except KeyError:
        known = ", ".join(sorted(ENDPOINTS))
        raise ValueError(f"unknown endpoint {name!r}; known: {known}") from None
    declared: Endpoint = importlib.import_module(module_name).ENDPOINT
    if declared.name != name:
        raise RuntimeError(f"{module_name} declares {declared.name!r}, registered as {name!r}")
    return declared


def build_app(
    app_name: str,
    names: Sequence[str],
    settings: Settings,
    *,
    mounts: Sequence[tuple[str, ASGIApp]] = (),
) -> FastAPI:
    """The app serving these endpoints (one for `userapi serve`, all for `userapi dev`): their
    routers, their direct routes, and the largest body bound any of them declares."""
    from userapi.web.app import create_app

    declared = [load(name) for name in names]
    return create_app(
        app_name,
        [endpoint.router for endpoint in declared],
        settings,
        mounts=mounts,
        direct=tuple(route for endpoint in declared for route in endpoint.direct_routes),
        max_body_bytes=max(endpoint.max_body_bytes for endpoint in declared),
        database=any(endpoint.database for endpoint in declared),
    )
