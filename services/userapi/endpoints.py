"""The endpoint registry: name (the Knative Service name) -> the module that defines its router.

Kept as strings so that serving one endpoint imports that module only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

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
