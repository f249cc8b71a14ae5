"""The endpoint registry: name (the Knative Service name) -> the module that defines its router
(and, optionally, `DIRECT_ROUTES` for a hot GET route, see runtime/direct.py, and a larger
`MAX_BODY_BYTES` than runtime/app.py's).

Kept as strings so that serving one endpoint imports that module only.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp

    from userapi.runtime.direct import DirectGet
    from userapi.runtime.settings import Settings

ENDPOINTS: dict[str, str] = {
    "get-user": "userapi.get_user",
    "list-users": "userapi.list_users",
    "create-user": "userapi.create_user",
    "update-user": "userapi.update_user",
    "delete-user": "userapi.delete_user",
    "auth0-events": "userapi.auth0_events",
}


def load(name: str) -> ModuleType:
    try:
        module_name = ENDPOINTS[name]
    except KeyError:
        known = ", ".join(sorted(ENDPOINTS))
        raise ValueError(f"unknown endpoint {name!r}; known: {known}") from None
    return importlib.import_module(module_name)


def build_app(
    app_name: str,
    names: Sequence[str],
    settings: Settings,
    *,
    mounts: Sequence[tuple[str, ASGIApp]] = (),
) -> FastAPI:
    """The app serving these endpoints (one for `userapi serve`, all for `userapi dev`): their
    routers, their direct routes, and the largest body bound any of them declares."""
    from userapi.runtime.app import MAX_BODY_BYTES, create_app

    modules = [load(name) for name in names]
    direct: tuple[DirectGet, ...] = tuple(
        route for module in modules for route in getattr(module, "DIRECT_ROUTES", ())
    )
    return create_app(
        app_name,
        [module.router for module in modules],
        settings,
        mounts=mounts,
        direct=direct,
        max_body_bytes=max(
            [MAX_BODY_BYTES, *(getattr(module, "MAX_BODY_BYTES", 0) for module in modules)]
        ),
    )
