"""The whole API's OpenAPI document, merged from every endpoint's router (docs/openapi.json)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from userapi import __version__, endpoints
from userapi.web.dependencies import document
from userapi.web.error_rendering import install_error_handlers


def merged_spec() -> dict[str, Any]:
    app = FastAPI(
        title="userapi",
        version=__version__,
        description=(
            "A user API in front of Auth0. Each operation is served by its own Knative Service "
            "(named in the x-userapi-endpoint field); `userapi dev` serves them all on one port."
        ),
    )
    install_error_handlers(app)
    routers = [endpoints.load(name).router for name in endpoints.ENDPOINTS]
    for router in routers:
        app.include_router(router)
    spec = app.openapi()
    document(spec, routers)
    # Which Knative Service answers each operation.
    for name, router in zip(endpoints.ENDPOINTS, routers, strict=True):
        for route in router.routes:
            if isinstance(route, APIRoute):
                for method in route.methods or ():
                    spec["paths"][route.path][method.lower()]["x-userapi-endpoint"] = name
    return spec


def render() -> str:
    return json.dumps(merged_spec(), indent=2, sort_keys=True) + "\n"
