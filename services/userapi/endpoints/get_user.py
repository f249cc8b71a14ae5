"""get-user: `GET /users/{user_id}`: a profile from Auth0 (cached) plus the app's account row."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Header, Request, Response

from userapi.adapters.access_tokens import Permission, Principal
from userapi.domain.users import (
    NO_STORE,
    OMITTED_FIELDS,
    User,
    etag,
    etag_matches,
    omitted_fields,
    target_user,
)
from userapi.platform.errors import not_found
from userapi.web.dependencies import (
    ResourcesDep,
    UserIdPath,
    principal_of,
    resources_of,
)
from userapi.web.endpoint import Endpoint
from userapi.web.error_rendering import ERROR_RESPONSES

# What the registry (userapi/endpoints/__init__.py) reads.
ENDPOINT = Endpoint("get-user", Permission.READ_USERS, self_service=True)
router = ENDPOINT.router


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
        f"user needs the `{ENDPOINT.permission}` permission. The ETag changes with the profile "
        "or the account; send it back in If-None-Match for a 304, or in If-Match to update-user. "
        "Metadata that this API could not have stored (too deep, over 16 kB, unencodable) is "
        "left out, key by key, and named in the Omitted-Fields header."
    ),
)
async def get_user(
    user_id: UserIdPath,
    principal: Annotated[Principal, ENDPOINT.caller],
    resources: ResourcesDep,
    response: Response,
    if_none_match: Annotated[str | None, Header()] = None,
) -> User | Response:
    target = target_user(user_id, principal)

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
        return Response(status_code=304, headers={"ETag": tag, **NO_STORE})
    response.headers["ETag"] = tag
    response.headers.update(NO_STORE)
    response.headers.update(omitted_fields(lookup.omitted))
    return User.model_validate({**lookup.profile, "account": account})


# The API's hot path: FastAPI's parameter solving was a third of a cached read's CPU.
@ENDPOINT.direct_get("/users/{user_id}")
async def _get_user_directly(request: Request, user_id: str) -> Response:
    """The route above without FastAPI's parameter solving (web/direct_routes.py): the same
    dependencies and the same function, called with what FastAPI would have passed."""
    principal = await ENDPOINT.authorize(request, await principal_of(request))
    resources = await resources_of(request)
    response = Response()
    result = await get_user(
        user_id, principal, resources, response, request.headers.get("if-none-match")
    )
    if isinstance(result, Response):
        return result
    headers = {"ETag": response.headers["ETag"], **NO_STORE}
    if OMITTED_FIELDS in response.headers:
        headers[OMITTED_FIELDS] = response.headers[OMITTED_FIELDS]
    return Response(result.model_dump_json(), media_type="application/json", headers=headers)
