"""update-user: `PATCH /users/{user_id}`: Auth0 profile fields, metadata and the account row."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Header, Request, Response
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import SkipJsonSchema

from userapi.adapters.access_tokens import Permission, Principal
from userapi.domain import audit
from userapi.domain.user_fields import Email, Metadata, Name, Picture, Plan, Preferences
from userapi.domain.users import (
    NO_STORE,
    User,
    etag,
    etag_matches,
    omitted_fields,
    target_user,
)
from userapi.platform.errors import APIError, bad_request, not_found
from userapi.web import request_body
from userapi.web.dependencies import ResourcesDep, UserIdPath
from userapi.web.endpoint import Endpoint
from userapi.web.error_rendering import ERROR_RESPONSES, ErrorBody

# What users may change about themselves without update:users.
SELF_SERVICE_FIELDS = frozenset({"name", "given_name", "family_name", "nickname", "user_metadata"})
ACCOUNT_FIELDS = frozenset({"plan", "preferences"})

# What the registry (userapi/endpoints/__init__.py) reads.
ENDPOINT = Endpoint("update-user", Permission.UPDATE_USERS, self_service=True)
router = ENDPOINT.router

# Optional, never null: a field left out is left alone, and null is refused (400). The None in
# each type is only the "not sent" default, kept out of the schema (SkipJsonSchema) so that the
# OpenAPI document says what the API accepts.
Unset = SkipJsonSchema[None]


class UserUpdate(BaseModel):
    """Only the fields sent are changed; none may be null. Metadata is merged at the first level,
    like Auth0: a key set to null is deleted, a nested object is replaced whole."""

    model_config = ConfigDict(extra="forbid")

    name: Name | Unset = None
    given_name: Name | Unset = None
    family_name: Name | Unset = None
    nickname: Name | Unset = None
    picture: Picture | Unset = None
    email: Email | Unset = None
    email_verified: bool | Unset = None
    blocked: bool | Unset = None
    user_metadata: Metadata | Unset = None
    app_metadata: Metadata | Unset = None
    plan: Plan | Unset = None
    preferences: Preferences | Unset = None


@router.patch(
    "/users/{user_id}",
    response_model=User,
    responses={
        **ERROR_RESPONSES,
        **request_body.ERROR_RESPONSES,
        412: {"model": ErrorBody, "description": "If-Match does not match the ETag"},
    },
    summary="Update a user",
    description=(
        f"Needs `{ENDPOINT.permission}`, except for callers changing their own "
        + ", ".join(sorted(SELF_SERVICE_FIELDS))
        + ". Send the ETag from get-user in If-Match to refuse lost updates (412). Fields may "
        "be left out but not sent as null; a metadata key set to null is deleted."
    ),
    openapi_extra=request_body.openapi_extra(UserUpdate),
)
async def update_user(
    request: Request,
    user_id: UserIdPath,
    principal: Annotated[Principal, ENDPOINT.caller],
    resources: ResourcesDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> User:
    # ENDPOINT.caller has refused another user's caller without update:users: 403 before
    # the body is read.
    target = target_user(user_id, principal)
    update = await request_body.read(request, UserUpdate)
    changes = update.model_dump(exclude_unset=True)
    if not changes:
        raise bad_request("Send at least one field to change.")
    nulls = [k for k, v in changes.items() if v is None]
    if nulls:
        raise bad_request(f"{', '.join(nulls)}: may not be null (leave a field out to keep it).")
    if not set(changes) <= SELF_SERVICE_FIELDS:
        ENDPOINT.require(principal)

    if if_match is not None:
        # Compared against Auth0 itself, not the cache: a stale ETag must not pass.
        current, account = await asyncio.gather(
            resources.auth0.get_user(target), resources.accounts.get(target)
        )
        if current is None:
            raise not_found("The user does not exist.")
        if not etag_matches(if_match, etag(current, account)):
            raise APIError(412, "precondition_failed", "The user changed since you read it.")

    auth0_changes = {k: v for k, v in changes.items() if k not in ACCOUNT_FIELDS}
    if auth0_changes:
        profile = await resources.auth0.update_user(target, auth0_changes)
    else:
        profile = await resources.auth0.get_user(target)
    if profile is None:
        raise not_found("The user does not exist.")
    # The new profile replaces the cached one at once, for every process sharing the cache.
    stored = await resources.profiles.put(profile)

    async with resources.accounts.writing(target) as session:
        if ACCOUNT_FIELDS & set(changes):
            account = await resources.accounts.upsert(
                target, plan=changes.get("plan"), preferences=changes.get("preferences"),
                session=session,
            )  # fmt: skip
        else:
            account = await resources.accounts.get(target, session)
        await audit.record(
            session, actor=principal.subject, endpoint=ENDPOINT.name, action="update",
            target_user_id=target, changed_fields=changes,
        )  # fmt: skip
    # Metadata set around this API may still break the limits: left out, as get-user does.
    visible = stored.visible
    response.headers["ETag"] = etag(visible.profile, account)
    response.headers.update(NO_STORE)
    response.headers.update(omitted_fields(visible.omitted))
    return User.model_validate({**visible.profile, "account": account})
