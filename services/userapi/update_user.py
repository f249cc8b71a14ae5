"""update-user: `PATCH /users/{user_id}`: Auth0 profile fields, metadata and the account row."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, ConfigDict, Field

from userapi.runtime import audit
from userapi.runtime.deps import PrincipalDep, ResourcesDep
from userapi.runtime.errors import ERROR_RESPONSES, APIError, bad_request, not_found
from userapi.runtime.profiles import allowlisted
from userapi.runtime.users import EMAIL_PATTERN, User, etag, etag_matches, target_user

ENDPOINT = "update-user"
UPDATE_USERS = "update:users"
# What users may change about themselves without update:users.
SELF_SERVICE_FIELDS = frozenset({"name", "given_name", "family_name", "nickname", "user_metadata"})
ACCOUNT_FIELDS = frozenset({"plan", "preferences"})

router = APIRouter(tags=["users"])

Name = Annotated[str, Field(min_length=1, max_length=150)]


class UserUpdate(BaseModel):
    """Only the fields sent are changed. Metadata is merged at the first level, like Auth0:
    a key set to null is deleted, a nested object is replaced whole."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    given_name: Name | None = None
    family_name: Name | None = None
    nickname: Name | None = None
    picture: Annotated[str, Field(max_length=2048, pattern=r"^https://")] | None = None
    email: Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)] | None = None
    email_verified: bool | None = None
    blocked: bool | None = None
    user_metadata: dict[str, Any] | None = None
    app_metadata: dict[str, Any] | None = None
    plan: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    preferences: dict[str, Any] | None = None


def _check_metadata(name: str, value: dict[str, Any] | None) -> None:
    for key in value or {}:
        if "." in key or "$" in key or not key:
            raise bad_request(f"{name}: key {key!r} may not be empty or contain '.' or '$'.")


@router.patch(
    "/users/{user_id}",
    response_model=User,
    responses={**ERROR_RESPONSES, 412: {"description": "If-Match does not match the ETag"}},
    summary="Update a user",
    description=(
        f"Needs `{UPDATE_USERS}`, except for callers changing their own "
        + ", ".join(sorted(SELF_SERVICE_FIELDS))
        + ". Send the ETag from get-user in If-Match to refuse lost updates (412)."
    ),
)
async def update_user(
    user_id: str,
    update: UserUpdate,
    principal: PrincipalDep,
    resources: ResourcesDep,
    response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> User:
    target = target_user(user_id, principal)
    changes = update.model_dump(exclude_unset=True)
    if not changes:
        raise bad_request("Send at least one field to change.")
    nulls = [k for k, v in changes.items() if v is None and not k.endswith("_metadata")]
    if nulls:
        raise bad_request(f"{', '.join(nulls)}: may not be null.")
    if target != principal.subject or not set(changes) <= SELF_SERVICE_FIELDS:
        principal.require(UPDATE_USERS)
    _check_metadata("user_metadata", changes.get("user_metadata"))
    _check_metadata("app_metadata", changes.get("app_metadata"))

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
    await resources.profiles.put(profile)

    async with resources.database.transaction() as session:
        if ACCOUNT_FIELDS & set(changes):
            account = await resources.accounts.upsert(
                target, plan=changes.get("plan"), preferences=changes.get("preferences"),
                session=session,
            )  # fmt: skip
        else:
            account = await resources.accounts.get(target, session)
        await audit.record(
            session, actor=principal.subject, endpoint=ENDPOINT, action="update",
            target_user_id=target, changed_fields=changes,
        )  # fmt: skip
    visible = allowlisted(profile, resources.settings.profile_include_app_metadata)
    response.headers["ETag"] = etag(visible, account)
    return User.model_validate({**visible, "account": account})
