"""The whole API's OpenAPI document, merged from every endpoint's router (docs/openapi.json)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from userapi import __version__, endpoints
from userapi.web.dependencies import document
from userapi.web.error_rendering import install_error_handlers


def merged_spec(host: str = "") -> dict[str, Any]:
    """The whole API's document; with `host` (the chart's `api.host`), served at
    `https://HOST`, one host for every operation."""
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
    document(spec, routers, host)
    # Which Knative Service answers each operation.
    for name, router in zip(endpoints.ENDPOINTS, routers, strict=True):
        for route in router.routes:
            if isinstance(route, APIRoute):
                for method in route.methods or ():
                    spec["paths"][route.path][method.lower()]["x-userapi-endpoint"] = name
    return spec


def render(host: str = "") -> str:
    return json.dumps(merged_spec(host), indent=2, sort_keys=True) + "\n"


def route_table() -> list[dict[str, Any]]:
    """Which endpoint serves each method and path, from the registry (the routers the OpenAPI
    document is merged from), with the Gateway API path match that selects it on one host:
    `Exact` for a path without parameters, else `PathPrefix` on the part before the first one.

    The chart's HTTPRoute is rendered from this (helm/userapi/api-routes.yaml, written by
    manifests/generate.py). Refuses a table two endpoints would share a match in: a gateway
    would then send one of them the other's requests.
    """
    rows: list[dict[str, Any]] = []
    for name in endpoints.ENDPOINTS:
        for route in endpoints.load(name).router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                path = route.path_format
                if "{" in path:
                    match = {"type": "PathPrefix", "value": path[: path.index("{")]}
                else:
                    match = {"type": "Exact", "value": path}
                for method in sorted(route.methods or ()):
                    rows.append({"endpoint": name, "method": method, "path": path,
                                 "match": match})  # fmt: skip
    served: dict[tuple[str, str, str], str] = {}
    for row in rows:
        key = (row["method"], row["match"]["type"], row["match"]["value"])
        if served.setdefault(key, row["endpoint"]) != row["endpoint"]:
            raise ValueError(f"{' '.join(key)} would route to {served[key]} and {row['endpoint']}")
    return sorted(rows, key=lambda r: (r["path"], r["method"]))
