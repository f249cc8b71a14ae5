"""list-users: searching, paging, the cache it warms, and its errors.

Each endpoint runs as its own process (tests/integration/conftest.py's `api`), sharing Redis
and PostgreSQL through PgBouncer."""

from __future__ import annotations

import secrets

import pytest
from userapi.domain.users import user_path

from tests.support.api import API, GET_ROUTE

pytestmark = pytest.mark.integration


def test_list_users_pages_and_warms_the_cache(api: API, admin: str, clean_emulator) -> None:
    marker = secrets.token_hex(4)
    created = [clean_emulator.create_user(f"list-{marker}-{i}@example.com") for i in range(3)]
    response = api.call(
        "list-users",
        "GET",
        "/users",
        admin,
        params={"q": f"email:list-{marker}*", "per_page": 2, "sort": "email:1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["page"], body["per_page"], body["total"]) == (0, 2, 3)
    assert [u["email"] for u in body["users"]] == [c["email"] for c in created[:2]]
    assert all("identities" not in u for u in body["users"])
    clean_emulator.reset()
    assert api.call("get-user", "GET", user_path(created[0]["user_id"]), admin).status_code == 200
    assert clean_emulator.calls(GET_ROUTE) == 0  # served from what list-users cached


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"per_page": 0}, "per_page"),
        ({"per_page": 51}, "per_page"),
        ({"page": -1}, "page"),
        ({"page": 20, "per_page": 50}, "page"),
        ({"sort": "password:1"}, "sort"),
        ({"sort": "email:up"}, "sort"),
        ({"q": "app_metadata.role:admin"}, "q"),
        ({"q": "email:x +app_metadata.role:admin"}, "q"),
        ({"q": "email:x !app_metadata.role:admin"}, "q"),
        ({"q": "email:x AND app\\_metadata.role:admin"}, "q"),
        ({"q": "email:x&&app_metadata.role:admin"}, "q"),
        ({"q": "_exists_:app_metadata.role"}, "q"),
        ({"q": "email:x AND :admin"}, "q"),
        ({"q": "email:" + "a" * 600}, "q"),
        ({"q": "justtext"}, "q"),
    ],
)
def test_list_users_rejects_bad_parameters_naming_them(api: API, admin: str, params, field) -> None:
    response = api.call("list-users", "GET", "/users", admin, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert field in response.json()["message"]


def test_list_users_needs_read_users(api: API, clean_emulator) -> None:
    token = clean_emulator.token("auth0|nobody00000000000000000000", [])
    assert api.call("list-users", "GET", "/users", token).status_code == 403


def test_a_slow_auth0_search_is_a_503_with_retry_after(
    api: API, admin: str, clean_emulator
) -> None:
    clean_emulator.fault("GET /api/v2/users", kind="status", status=503, times=None)
    response = api.call("list-users", "GET", "/users", admin, params={"q": "email:x*"})
    assert response.status_code == 503
    assert response.json()["error"] == "search_unavailable"
    assert int(response.headers["retry-after"]) > 0
