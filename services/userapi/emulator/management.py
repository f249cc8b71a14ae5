"""Management API v2 user routes. Authentication, rate limiting and faults wrap these in app.py.

Handlers raise ManagementError for Auth0's error envelope; query strings are validated the way
Auth0 does (unknown parameters and bad values are 400 invalid_query_string).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from userapi.emulator.errors import ManagementError, invalid_body, invalid_query
from userapi.emulator.users import UserStore, project

MAX_PER_PAGE = 50
MAX_REACHABLE = 1000
MAX_BODY_BYTES = 1_000_000
PAGING_LIMIT = (
    "You can only page through the first 1000 records. "
    "See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation"
)
_PROJECTION = frozenset({"fields", "include_fields"})
_LIST_PARAMS = _PROJECTION | {
    "q", "page", "per_page", "include_totals", "sort", "search_engine", "connection",
    "primary_order",
}  # fmt: skip


def _check_params(request: Request, allowed: frozenset[str]) -> None:
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise invalid_query(f"Additional properties not allowed: {','.join(unknown)}")


def _boolean(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise invalid_query(f"Expected type boolean but found type string ({name})")
    return raw.lower() == "true"


def _integer(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise invalid_query(f"Expected type integer but found type string ({name})") from exc


def _projection(request: Request) -> tuple[str | None, bool]:
    return request.query_params.get("fields"), _boolean(request, "include_fields", True)


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ManagementError(413, "Payload too large: 1 MB maximum.", "payload_too_large")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ManagementError(400, "Invalid request payload JSON format", "invalid_body") from exc
    if not isinstance(body, dict):
        raise invalid_body(f"Expected type object but found type {type(body).__name__}")
    return body


async def get_user(store: UserStore, request: Request) -> Response:
    _check_params(request, _PROJECTION)
    # Starlette has already percent-decoded the path: auth0%7Cabc arrives as auth0|abc.
    user = store.get(request.path_params["user_id"])
    fields, include = _projection(request)
    return JSONResponse(project(user, fields, include))


async def list_users(store: UserStore, request: Request) -> Response:
    _check_params(request, _LIST_PARAMS)
    page = _integer(request, "page", 0)
    per_page = _integer(request, "per_page", MAX_PER_PAGE)
    if page < 0:
        raise invalid_query("page must be >= 0")
    if not 0 <= per_page <= MAX_PER_PAGE:
        raise invalid_query(f"per_page must be between 0 and {MAX_PER_PAGE}")
    start = page * per_page
    if start >= MAX_REACHABLE or start + per_page > MAX_REACHABLE:
        raise ManagementError(400, PAGING_LIMIT, "invalid_paging")
    include_totals = _boolean(request, "include_totals", False)
    fields, include = _projection(request)
    found = store.search(request.query_params.get("q"), request.query_params.get("sort"))
    connection = request.query_params.get("connection")
    if connection:
        found = [u for u in found if any(
            i.get("connection") == connection for i in u.get("identities") or []
        )]  # fmt: skip
    users = [project(u, fields, include) for u in found[start : start + per_page]]
    if include_totals:
        body = {
            "start": start,
            "limit": per_page,
            "length": len(users),
            "total": len(found),
            "users": users,
        }
        return JSONResponse(body)
    return JSONResponse(users)


async def users_by_email(store: UserStore, request: Request) -> Response:
    _check_params(request, _PROJECTION | {"email"})
    email = request.query_params.get("email")
    if not email:
        raise invalid_query("Missing required property: email")
    fields, include = _projection(request)
    return JSONResponse([project(u, fields, include) for u in store.by_email(email)])


async def create_user(store: UserStore, request: Request) -> Response:
    return JSONResponse(store.create(await json_body(request)), status_code=201)


async def update_user(store: UserStore, request: Request) -> Response:
    user_id = request.path_params["user_id"]
    store.get(user_id)  # 404 before validating the body, as Auth0 answers for an unknown user
    return JSONResponse(store.update(user_id, await json_body(request)))


async def delete_user(store: UserStore, request: Request) -> Response:
    # Deleting a user that is already gone is still a 204.
    store.delete(request.path_params["user_id"])
    return Response(status_code=204)
