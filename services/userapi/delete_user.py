"""delete-user: `DELETE /users/{user_id}` in Auth0 and here; repeating it answers 204 again."""

from __future__ import annotations

from fastapi import APIRouter, Response

from userapi.runtime import audit
from userapi.runtime.auth import Permission
from userapi.runtime.deps import PrincipalDep, ResourcesDep, UserIdPath
from userapi.runtime.endpoint import Endpoint
from userapi.runtime.error_responses import ERROR_RESPONSES
from userapi.runtime.users import target_user

router = APIRouter(tags=["users"])


@router.delete(
    "/users/{user_id}",
    status_code=204,
    response_class=Response,
    responses=ERROR_RESPONSES,
    summary="Delete a user",
    description=(
        f"Deletes the Auth0 user and the app's account row. Needs `{Permission.DELETE_USERS}`."
    ),
)
async def delete_user(
    user_id: UserIdPath, principal: PrincipalDep, resources: ResourcesDep
) -> Response:
    principal.require(Permission.DELETE_USERS)
    target = target_user(user_id, principal)
    # Auth0 first: if it fails, nothing here has changed and the caller can simply retry.
    await resources.auth0.delete_user(target)
    # Readers see the deletion at once, even if the database step below fails; the tombstone
    # also keeps a read that was already fetching the old profile from caching it again.
    await resources.profiles.tombstone(target)
    async with resources.database.transaction() as session:
        await resources.accounts.delete(session, target)
        await audit.record(
            session,
            actor=principal.subject,
            endpoint=ENDPOINT.name,
            action="delete",
            target_user_id=target,
        )
    return Response(status_code=204)


# What the registry (userapi/endpoints.py) reads.
ENDPOINT = Endpoint("delete-user", router, Permission.DELETE_USERS)
