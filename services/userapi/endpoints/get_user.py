"""get-user: `GET /users/{user_id}`: a profile from Auth0 (cached) plus the app's account row."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header, Request, Response

from userapi.adapters.access_tokens import Permission, Principal
from userapi.adapters.local_cache import MISSING
from userapi.domain.accounts import Account
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
from userapi.web.resources import Resources

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
    if_none_match = request.headers.get("if-none-match")
    local = _answer_locally(resources, target_user(user_id, principal), if_none_match)
    if local is not None:
        return local
    response = Response()
    result = await get_user(user_id, principal, resources, response, if_none_match)
    if isinstance(result, Response):
        return result
    headers = {"ETag": response.headers["ETag"], **NO_STORE}
    if OMITTED_FIELDS in response.headers:
        headers[OMITTED_FIELDS] = response.headers[OMITTED_FIELDS]
    return Response(result.model_dump_json(), media_type="application/json", headers=headers)


class _Prepared(Response):
    """An answer whose status, body and raw headers were made when it was rendered: Starlette's
    Response would encode its headers again on every request."""

    def __init__(
        self, status_code: int, body: bytes | memoryview, raw_headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.raw_headers = list(raw_headers)  # a copy: whoever sends it may extend it
        self.background = None


@dataclass(frozen=True)
class _Rendered:
    profile: object  # the copy's profile and account it was rendered from (compared by identity)
    account: object
    etag: str
    ok: _Prepared  # the 200, and the 304 for an If-None-Match that holds the ETag
    not_modified: _Prepared


# Answers rendered from the process's own copy, by user. Valid while the copy still holds the
# very objects they were rendered from; a write replaces those, and the next read renders again.
_RENDERED: OrderedDict[str, _Rendered] = OrderedDict()
_RENDERED_MAX = 4096


def _answer_locally(
    resources: Resources, target: str, if_none_match: str | None
) -> Response | None:
    """The answer from this process's copy of the profile and the account row, with no await
    and, when nothing changed since the last such answer, no rendering: what get_user would
    answer from them. None when either is not in the copy (get_user reads them)."""
    account = resources.accounts.local_hit(target)
    if account is MISSING:
        return None
    entry = resources.profiles.local_hit(target)
    if entry is None:
        return None
    if entry.profile is None:
        raise not_found("The user does not exist.")
    rendered = _RENDERED.get(target)
    if rendered is None or rendered.profile is not entry.profile or rendered.account is not account:
        rendered = _render(entry.profile, account, entry.omitted)
        _RENDERED[target] = rendered
        if len(_RENDERED) > _RENDERED_MAX:
            _RENDERED.popitem(last=False)
    if if_none_match is not None and etag_matches(if_none_match, rendered.etag):
        return _Prepared(304, b"", rendered.not_modified.raw_headers)
    return _Prepared(200, rendered.ok.body, rendered.ok.raw_headers)


def _render(profile: dict[str, Any], account: object, omitted: tuple[str, ...]) -> _Rendered:
    known = account if isinstance(account, Account) else None
    tag = etag(profile, known)
    body = User.model_validate({**profile, "account": known}).model_dump_json().encode()
    # As Starlette would send them (web/direct_routes.py's test compares the two answers).
    ok = Response(
        body,
        media_type="application/json",
        headers={"ETag": tag, **NO_STORE, **omitted_fields(omitted)},
    )
    not_modified = Response(status_code=304, headers={"ETag": tag, **NO_STORE})
    return _Rendered(
        profile,
        account,
        tag,
        _Prepared(200, body, ok.raw_headers),
        _Prepared(304, b"", not_modified.raw_headers),
    )
