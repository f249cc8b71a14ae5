"""`Annotated` dependencies that endpoint functions declare."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from userapi.runtime import context
from userapi.runtime.app import Resources
from userapi.runtime.auth import Principal, authenticate

# Declares the bearer scheme in OpenAPI; the header itself is parsed by `authenticate`, which
# gives a precise 401 where HTTPBearer would only say "Not authenticated".
_bearer = HTTPBearer(auto_error=False, description="An Auth0 access token for AUTH0_AUDIENCE.")


# async, though it awaits nothing: FastAPI runs a sync dependency in a worker thread, a thread
# hop per request on the hot path.
async def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(_resources)]


async def _principal(
    request: Request,
    resources: ResourcesDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    principal = await authenticate(resources.verifier, request.headers.get("authorization"))
    ctx = context.current()
    if ctx is not None:
        ctx.subject = principal.subject
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]
