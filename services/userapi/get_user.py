"""get-user: `GET /users/{user_id}`: a profile from Auth0 (cached) plus the app's account row."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from userapi.runtime.auth import Permission
from userapi.runtime.deps import (
    PrincipalDep,
    ResourcesDep,
    UserIdPath,
    principal_of,
    resources_of,
)
from userapi.runtime.direct import DirectGet
from userapi.runtime.endpoint import Endpoint
from userapi.runtime.error_responses import ERROR_RESPONSES
from userapi.runtime.errors import not_found
from userapi.runtime.users import (
    OMITTED_FIELDS,
    User,
    authorized_target,
    etag,
    etag_matches,
    omitted_fields,
)

router = APIRouter(tags=["users"])


@router.get(
    "/users/{user_id}",
    response_model=User,
    responses={
        **ERROR_RESPONSES,
        304: {"description": "If-None-Match holds the current ETag: no body"},
    },
    summary="Get a user",
    description=(
        "An Auth0 user's profile and the app's account row. `me` is the caller. Reading another "
        f"user needs the `{Permission.READ_USERS}` permission. The ETag changes with the profile "
        "or the account; send it back in If-None-Match for a 304, or in If-Match to update-user. "
        "Metadata that this API could not have stored (too deep, over 16 kB, unencodable) is "
        "left out, key by key, and named in the Omitted-Fields header."
    ),
)
async def get_user(
    user_id: UserIdPath,
    principal: PrincipalDep,
    resources: ResourcesDep,
    response: Response,
    if_none_match: Annotated[str | None, Header()] = None,
) -> User | Response:
    target = authorized_target(user_id, principal, Permission.READ_USERS)

    # The account row and the profile are independent: read both at once.
    account_read = asyncio.create_task(resources.accounts.get(target))
    try:
        lookup = await resources.profiles.get(target)
    except BaseException:
        account_read.cancel()
        raise
    account = await account_read
    if lookup.profile is None:
        raise not_found("The user does not exist.")
    tag = etag(lookup.profile, account)
    if etag_matches(if_none_match, tag):
        return Response(status_code=304, headers={"ETag": tag})
    response.headers["ETag"] = tag
    response.headers.update(omitted_fields(lookup.omitted))
    return User.model_validate({**lookup.profile, "account": account})


async def _get_user_directly(request: Request, user_id: str) -> Response:
    """The route above without FastAPI's parameter solving (runtime/direct.py): the same
    dependencies and the same function, called with what FastAPI would have passed."""
    principal = await principal_of(request)
    resources = await resources_of(request)
    response = Response()
    result = await get_user(
        user_id, principal, resources, response, request.headers.get("if-none-match")
    )
    if isinstance(result, Response):
        return result
    headers = {"ETag": response.headers["ETag"]}
    if OMITTED_FIELDS in response.headers:
        headers[OMITTED_FIELDS] = response.headers[OMITTED_FIELDS]
    return Response(result.model_dump_json(), media_type="application/json", headers=headers)


# What the registry (userapi/endpoints.py) reads.
ENDPOINT = Endpoint(
    "get-user",
    router,
    Permission.READ_USERS,
    # The API's hot path: FastAPI's parameter solving was a third of a cached read's CPU.
    direct_routes=(DirectGet("/users/{user_id}", _get_user_directly),),
)
