"""The endpoint registry: name (the Knative Service name) -> the module that defines its router
(and, for a hot GET route, its `DIRECT_ROUTES`: see runtime/direct.py).

Kept as strings so that serving one endpoint imports that module only.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

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


def direct_routes(modules: Iterable[ModuleType]) -> tuple[DirectGet, ...]:
    return tuple(route for module in modules for route in getattr(module, "DIRECT_ROUTES", ()))


def max_body_bytes(modules: Iterable[ModuleType]) -> int:
    """The largest request body these endpoints accept (runtime/app.py's default, or more)."""
    from userapi.runtime.app import MAX_BODY_BYTES

    return max([MAX_BODY_BYTES, *(getattr(module, "MAX_BODY_BYTES", 0) for module in modules)])


def build_app(name: str, settings: Settings) -> FastAPI:
    """One endpoint's app as `userapi serve` runs it: its router, direct routes and body bound."""
    from userapi.runtime.app import create_app

    module = load(name)
    return create_app(
        name,
        [module.router],
        settings,
        direct=direct_routes([module]),
        max_body_bytes=max_body_bytes([module]),
    )
