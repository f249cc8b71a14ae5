"""create-user: `POST /users`: the Auth0 user, its account row and an audit record.

With an Idempotency-Key a retry replays the first response, and a retry after a failure
between Auth0 and the database finishes the work instead of creating a second user.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from userapi.adapters.access_tokens import Permission, Principal
from userapi.domain import audit
from userapi.domain.accounts import Account
from userapi.domain.idempotency import (
    Claim,
    request_fingerprint,
    validate_key,
)
from userapi.domain.timestamps import parse_timestamp
from userapi.domain.user_fields import Email, Metadata, Name, Password, Plan
from userapi.domain.users import NO_STORE, User, etag, user_path
from userapi.platform.errors import APIError, Auth0Rejected
from userapi.web import request_body
from userapi.web.dependencies import ResourcesDep
from userapi.web.endpoint import Endpoint
from userapi.web.error_rendering import ERROR_RESPONSES, ErrorBody
from userapi.web.resources import Resources

# What the registry (userapi/endpoints/__init__.py) reads.
ENDPOINT = Endpoint("create-user", Permission.CREATE_USERS)
router = ENDPOINT.router


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email
    password: Password | None = Field(
        default=None, description="Omit it and set verify_email: Auth0 emails the user instead."
    )
    verify_email: bool = False
    name: Name | None = None
    given_name: Name | None = None
    family_name: Name | None = None
    nickname: Name | None = None
    user_metadata: Metadata = Field(default_factory=dict)
    plan: Plan = "free"

    @model_validator(mode="after")
    def _password_or_verification(self) -> UserCreate:
        if self.password is None and not self.verify_email:
            raise ValueError("send a password, or verify_email: true to let the user set one")
        return self


def _auth0_body(create: UserCreate, connection: str) -> dict[str, Any]:
    body = create.model_dump(exclude={"plan"}, exclude_none=True)
    body["connection"] = connection
    if create.password is None:
        # Database connections require a password; the user sets their own via the email flow.
        body["password"] = secrets.token_urlsafe(32) + "aA1!"
    return body


async def _adopt_existing(resources: Resources, email: str, claim: Claim) -> dict[str, Any] | None:
    """After a lost answer Auth0 may have created the user although we never learnt its id."""
    for user in await resources.auth0.users_by_email(email):
        created_at = parse_timestamp(user.get("created_at"))
        if created_at is not None and created_at >= claim.created_at:
            return user
    return None


@router.post(
    "/users",
    status_code=201,
    response_model=User,
    responses={
        **ERROR_RESPONSES,
        **request_body.ERROR_RESPONSES,
        409: {
            "model": ErrorBody,
            "description": "The user exists, or a request with this key is in progress",
        },
        422: {"model": ErrorBody, "description": "The Idempotency-Key was used with another body"},
    },
    summary="Create a user",
    description=(
        f"Needs `{ENDPOINT.permission}`. Send an Idempotency-Key to make retries safe: a "
        "retry with the same key and body replays the response; the same key with another body "
        "is a 422."
    ),
    openapi_extra=request_body.openapi_extra(UserCreate),
)
async def create_user(
    request: Request,
    principal: Annotated[Principal, ENDPOINT.caller],
    resources: ResourcesDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    # Read only now: 401 and 403 come first, and nothing below runs on a body that Auth0, the
    # database or the response could refuse.
    create = await request_body.read(request, UserCreate)
    keys = resources.idempotency
    claim = None
    if idempotency_key is not None:
        key = validate_key(idempotency_key)
        # The password stays out: the table keeps the hash as long as the key, and a hash of
        # a password is a password to anyone who can read the table and guess.
        fingerprint = request_fingerprint(create.model_dump(exclude={"password"}))
        claim = await keys.claim(ENDPOINT.name, principal.subject, key, fingerprint)
        if claim.is_replay:
            assert claim.replay_status is not None
            return _response(claim.replay_status, claim.replay_body, replayed=True)
    try:
        status, created = await _create(resources, principal, create, claim)
    except BaseException as exc:
        if claim is not None:
            definitive = isinstance(exc, Auth0Rejected | APIError)
            await keys.release(claim, forget=definitive)
        raise
    return _response(status, created, replayed=False)


async def _create(
    resources: Resources,
    principal: Principal,
    create: UserCreate,
    claim: Claim | None,
) -> tuple[int, dict[str, Any]]:
    profile: dict[str, Any] | None = None
    if claim is not None and claim.auth0_user_id is not None:
        profile = await resources.auth0.get_user(claim.auth0_user_id)
        if profile is None:
            raise APIError(409, "conflict", "The user created by the first attempt was deleted.")
    else:
        try:
            profile = await resources.auth0.create_user(
                _auth0_body(create, resources.settings.auth0_connection)
            )
        except Auth0Rejected as exc:
            # Only a retry may adopt: on a first attempt the 409 is someone else's user.
            if exc.status != 409 or claim is None or not claim.taken_over:
                raise
            profile = await _adopt_existing(resources, create.email, claim)
            if profile is None:
                raise
        if claim is not None:
            await resources.idempotency.record_auth0_user(claim, profile["user_id"])
    user_id = str(profile["user_id"])
    stored = await resources.profiles.put(profile)

    async with resources.accounts.writing(user_id) as session:
        account = await resources.accounts.get(user_id, session)
        if account is None:
            account = await resources.accounts.upsert(user_id, plan=create.plan, session=session)
        await audit.record(
            session, actor=principal.subject, endpoint=ENDPOINT.name, action="create",
            target_user_id=user_id, changed_fields=create.model_dump(exclude_unset=True),
        )  # fmt: skip
        # Everything create-user sent passed domain/user_fields.py's limits: nothing is omitted.
        visible = stored.visible.profile
        body = User.model_validate({**visible, "account": account}).model_dump(mode="json")
        if claim is not None:
            await resources.idempotency.complete(session, claim, 201, body)
    return 201, body


def _response(status: int, body: dict[str, Any], *, replayed: bool) -> JSONResponse:
    headers = {"Location": user_path(str(body["user_id"])), **NO_STORE}
    account = body.get("account")
    headers["ETag"] = etag(body, Account.model_validate(account) if account else None)
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=status, headers=headers)
