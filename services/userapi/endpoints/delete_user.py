"""delete-user: `DELETE /users/{user_id}` in Auth0 and here; repeating it answers 204 again."""

from __future__ import annotations

from typing import Annotated

from fastapi import Response

from userapi.adapters.access_tokens import Permission, Principal
from userapi.domain import audit
from userapi.domain.users import target_user
from userapi.web.dependencies import ResourcesDep, UserIdPath
from userapi.web.endpoint import Endpoint
from userapi.web.error_rendering import ERROR_RESPONSES

# What the registry (userapi/endpoints/__init__.py) reads.
ENDPOINT = Endpoint("delete-user", Permission.DELETE_USERS)
router = ENDPOINT.router


@router.delete(
    "/users/{user_id}",
    status_code=204,
    response_class=Response,
    responses=ERROR_RESPONSES,
    summary="Delete a user",
    description=(
        f"Deletes the Auth0 user and the app's account row. Needs `{ENDPOINT.permission}`."
    ),
)
async def delete_user(
    user_id: UserIdPath,
    principal: Annotated[Principal, ENDPOINT.caller],
    resources: ResourcesDep,
) -> Response:
    target = target_user(user_id, principal)
    # Auth0 first: if it fails, nothing here has changed and the caller can simply retry.
    await resources.auth0.delete_user(target)
    # Readers see the deletion at once, even if the database step below fails; the tombstone
    # also keeps a read that was already fetching the old profile from caching it again.
    await resources.profiles.tombstone(target)
    async with resources.accounts.writing(target) as session:
        await resources.accounts.delete(session, target)
        await audit.record(
            session,
            actor=principal.subject,
            endpoint=ENDPOINT.name,
            action="delete",
            target_user_id=target,
        )
    return Response(status_code=204)
