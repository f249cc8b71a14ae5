"""update-user: `PATCH /users/{user_id}`: Auth0 profile fields, metadata and the account row."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import SkipJsonSchema

from userapi.runtime import audit, body
from userapi.runtime.auth import Permission
from userapi.runtime.deps import PrincipalDep, ResourcesDep, UserIdPath
from userapi.runtime.endpoint import Endpoint
from userapi.runtime.error_responses import ERROR_RESPONSES, ErrorBody
from userapi.runtime.errors import APIError, bad_request, not_found
from userapi.runtime.fields import Email, Metadata, Name, Picture, Plan, Preferences
from userapi.runtime.users import (
    User,
    authorized_target,
    etag,
    etag_matches,
    omitted_fields,
)

# What users may change about themselves without update:users.
SELF_SERVICE_FIELDS = frozenset({"name", "given_name", "family_name", "nickname", "user_metadata"})
ACCOUNT_FIELDS = frozenset({"plan", "preferences"})

router = APIRouter(tags=["users"])

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
        **body.ERROR_RESPONSES,
        412: {"model": ErrorBody, "description": "If-Match does not match the ETag"},
    },
    summary="Update a user",
    description=(
        f"Needs `{Permission.UPDATE_USERS}`, except for callers changing their own "
        + ", ".join(sorted(SELF_SERVICE_FIELDS))
        + ". Send the ETag from get-user in If-Match to refuse lost updates (412). Fields may "
        "be left out but not sent as null; a metadata key set to null is deleted."
    ),
    openapi_extra=body.request_body(UserUpdate),
)
async def update_user(
    request: Request,
    user_id: UserIdPath,
    principal: PrincipalDep,
    resources: ResourcesDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> User:
    # Another user needs update:users whatever the body says: 403 before the body is read.
    target = authorized_target(user_id, principal, Permission.UPDATE_USERS)
    update = await body.read(request, UserUpdate)
    changes = update.model_dump(exclude_unset=True)
    if not changes:
        raise bad_request("Send at least one field to change.")
    nulls = [k for k, v in changes.items() if v is None]
    if nulls:
        raise bad_request(f"{', '.join(nulls)}: may not be null (leave a field out to keep it).")
    if not set(changes) <= SELF_SERVICE_FIELDS:
        principal.require(Permission.UPDATE_USERS)

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

    async with resources.database.transaction() as session:
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
    response.headers.update(omitted_fields(visible.omitted))
    return User.model_validate({**visible.profile, "account": account})


# What the registry (userapi/endpoints.py) reads.
ENDPOINT = Endpoint("update-user", router, Permission.UPDATE_USERS)
