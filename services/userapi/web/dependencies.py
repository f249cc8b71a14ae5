"""`Annotated` dependencies that endpoint functions declare."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from userapi.adapters.access_tokens import Principal, authenticate
from userapi.domain.users import USER_ID_FORMAT
from userapi.platform import context
from userapi.web import request_body
from userapi.web.resources import Resources

BEARER_SCHEME = "HTTPBearer"
_BEARER = {
    "type": "http",
    "scheme": "bearer",
    "description": "An Auth0 access token for AUTH0_AUDIENCE.",
}


# async, though it awaits nothing: FastAPI runs a sync dependency in a worker thread, a thread
# hop per request on the hot path.
async def resources_of(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(resources_of)]


async def principal_of(request: Request) -> Principal:
    """The caller, from the bearer token (401 without a valid one)."""
    # Called, not declared as ResourcesDep: each sub-dependency costs FastAPI's dependency
    # solving a few microseconds per request.
    resources = await resources_of(request)
    principal = await authenticate(resources.verifier, request.headers.get("authorization"))
    ctx = context.current()
    if ctx is not None:
        ctx.subject = principal.subject
    return principal


PrincipalDep = Annotated[Principal, Depends(principal_of)]

# The {user_id} of a path, as the OpenAPI document describes it. Described, not validated by
# FastAPI: users.validate_user_id judges it once the caller may act on the user (401, 403 first).
UserIdPath = Annotated[
    str,
    Path(
        description="An Auth0 user id (provider|id), or `me` for the caller.",
        json_schema_extra={"pattern": f"^(me|{USER_ID_FORMAT})$"},
    ),
]


def document(spec: dict[str, Any], routers: Iterable[APIRouter], host: str = "") -> None:
    """Completes FastAPI's document of `routers` with what userapi does that FastAPI cannot see:
    the bearer scheme, the bodies read by web/request_body.py, no 422 "Validation Error" where
    userapi answers a 400 (web/error_rendering.py renders validation errors so), and the one
    API host as the server when there is one (`API_HOST`, the chart's `api.host`)."""
    if host:
        spec["servers"] = [{"url": f"https://{host}"}]
    document_bearer_auth(spec, routers)
    request_body.document_bodies(spec)
    validation = "#/components/schemas/HTTPValidationError"
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            unprocessable = operation.get("responses", {}).get("422", {})
            media = unprocessable.get("content", {}).get("application/json", {})
            if media.get("schema", {}).get("$ref") == validation:
                del operation["responses"]["422"]
    schemas = spec.get("components", {}).get("schemas", {})
    if validation not in json.dumps(spec.get("paths", {})):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def document_bearer_auth(spec: dict[str, Any], routers: Iterable[APIRouter]) -> None:
    """Declare the bearer scheme on each operation of `routers` that depends on PrincipalDep.

    On the document, not with FastAPI's HTTPBearer dependency: that dependency cost a quarter
    of a cached read's CPU in FastAPI's per-request dependency solving (docs/performance.md),
    to parse a header that `authenticate` parses anyway, with a more precise 401.
    """
    secured = False
    routes = (route for router in routers for route in router.routes)
    for route in routes:
        if isinstance(route, APIRoute) and route.include_in_schema and _uses(route.dependant):
            for method in route.methods or ():
                operation = spec["paths"][route.path_format][method.lower()]
                operation["security"] = [{BEARER_SCHEME: []}]
                secured = True
    if secured:
        schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes[BEARER_SCHEME] = dict(_BEARER)


def _uses(dependant: Dependant) -> bool:
    return dependant.call is principal_of or any(_uses(sub) for sub in dependant.dependencies)
