"""list-users: `GET /users`, Auth0's user search, paged; the profiles it returns warm the cache."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Query, Response
from pydantic import BaseModel

from userapi.adapters.access_tokens import Permission, Principal
from userapi.domain.user_search import DESCRIPTION, check_query
from userapi.domain.users import NO_STORE, UserProfile, omitted_fields
from userapi.platform.errors import APIError, Auth0Error, bad_request
from userapi.web.dependencies import ResourcesDep
from userapi.web.endpoint import Endpoint
from userapi.web.error_rendering import ERROR_RESPONSES

MAX_REACHABLE = 1000  # Auth0 returns at most the first 1000 results of a search

SORTABLE_FIELDS = frozenset(
    {"email", "name", "given_name", "family_name", "nickname", "created_at", "updated_at",
     "last_login"}
)  # fmt: skip

# What the registry (userapi/endpoints/__init__.py) reads.
# Its pages are Auth0's search, with no account rows: it never reads PostgreSQL.
ENDPOINT = Endpoint("list-users", Permission.READ_USERS, database=False)
router = ENDPOINT.router


class UserPage(BaseModel):
    users: list[UserProfile]
    page: int
    per_page: int
    total: int


def _check_sort(sort: str) -> None:
    field, _, direction = sort.partition(":")
    if field not in SORTABLE_FIELDS or direction not in ("1", "-1"):
        allowed = ", ".join(sorted(SORTABLE_FIELDS))
        raise bad_request(f"sort: use field:1 or field:-1 with one of: {allowed}.")


@router.get(
    "/users",
    response_model=UserPage,
    responses=ERROR_RESPONSES,
    summary="Search users",
    description=(
        f"Auth0 user search (Lucene syntax, v3). Needs `{ENDPOINT.permission}`. `q` says which "
        "queries are accepted. At most the first 1000 results can be reached. Metadata left "
        "out of a profile (see get-user) is named in Omitted-Fields as users[i].<field>."
    ),
)
async def list_users(
    # A dependency: checked before the query parameters are (403 before 400).
    principal: Annotated[Principal, ENDPOINT.caller],
    resources: ResourcesDep,
    response: Response,
    q: Annotated[
        str | None, Query(description="Lucene query, e.g. email:*@example.com. " + DESCRIPTION)
    ] = None,
    page: Annotated[int, Query(ge=0, description="0-based page number")] = 0,
    per_page: Annotated[int, Query(ge=1, le=50)] = 50,
    sort: Annotated[str | None, Query(description="field:1 (ascending) or field:-1")] = None,
) -> UserPage:
    if q is not None:
        check_query(q)
    if sort is not None:
        _check_sort(sort)
    if page * per_page >= MAX_REACHABLE:
        raise bad_request(f"page: page * per_page must stay below {MAX_REACHABLE} (Auth0's limit).")

    try:
        result = await resources.auth0.list_users(
            q=q, page=page, per_page=per_page, sort=sort, fields=resources.profiles.fields
        )
    except Auth0Error as exc:
        if exc.status == 503:  # Auth0's answer to a search that took too long
            raise APIError(
                503, "search_unavailable", "Auth0 could not run this search now; "
                "retry later or narrow the query.", {"Retry-After": "5"},
            ) from exc  # fmt: skip
        raise
    users = [u for u in result.get("users", []) if isinstance(u, dict) and "user_id" in u]
    # Every profile fetched here is as fresh as a get-user miss: keep it for the next reads.
    stored = await asyncio.gather(*(resources.profiles.put(user) for user in users))
    visible = [each.visible for each in stored]
    response.headers.update(NO_STORE)
    response.headers.update(
        omitted_fields(f"users[{i}].{name}" for i, v in enumerate(visible) for name in v.omitted)
    )
    return UserPage(
        users=[UserProfile.model_validate(v.profile) for v in visible],
        page=page,
        per_page=per_page,
        total=int(result.get("total", len(users))),
    )
