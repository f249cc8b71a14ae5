"""update-user: self-service fields, ETags, validation, and readers elsewhere.

Each endpoint runs as its own process (tests/integration/conftest.py's `api`), sharing Redis
and PostgreSQL through PgBouncer."""

from __future__ import annotations

import secrets

import pytest
from userapi.domain.users import user_path

from tests.support.api import API

pytestmark = pytest.mark.integration


def test_users_update_their_own_metadata_without_permission(api: API, user, clean_emulator) -> None:
    token = clean_emulator.token(user["user_id"], [])
    response = api.call(
        "update-user",
        "PATCH",
        "/users/me",
        token,
        json={"name": "Self Named", "user_metadata": {"lang": None, "tz": "UTC"}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "Self Named"
    assert response.json()["user_metadata"] == {"theme": "dark", "tz": "UTC"}
    forbidden = api.call("update-user", "PATCH", "/users/me", token, json={"email": "x@y.example"})
    assert forbidden.status_code == 403
    other = api.call(
        "update-user",
        "PATCH",
        user_path("auth0|someoneelse00000000000000"),
        token,
        json={"name": "X"},
    )
    assert other.status_code == 403


def test_an_update_is_seen_at_once_by_get_user_in_another_process(api: API, user, admin) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).json()["name"] == "Original Name"  # cached now
    updated = api.call(
        "update-user",
        "PATCH",
        path,
        admin,
        json={"name": "Renamed", "plan": "pro", "preferences": {"a": 1}},
    )
    assert updated.status_code == 200, updated.text
    seen = api.call("get-user", "GET", path, admin).json()
    assert seen["name"] == "Renamed"
    assert seen["account"]["plan"] == "pro"
    assert seen["account"]["preferences"] == {"a": 1}
    audit = api.sql(
        f"SELECT changed_fields::text FROM audit_log WHERE target_user_id = '{user['user_id']}'"
    )
    assert audit == ['["name", "plan", "preferences"]']


def test_etags_give_304_and_412(api: API, user, admin) -> None:
    path = user_path(user["user_id"])
    first = api.call("get-user", "GET", path, admin)
    tag = first.headers["etag"]
    assert (
        api.call("get-user", "GET", path, admin, headers={"If-None-Match": tag}).status_code == 304
    )
    ok = api.call(
        "update-user", "PATCH", path, admin, json={"nickname": "nick"}, headers={"If-Match": tag}
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["etag"] != tag
    stale = api.call(
        "update-user",
        "PATCH",
        path,
        admin,
        json={"nickname": "lost update"},
        headers={"If-Match": tag},
    )
    assert stale.status_code == 412
    assert stale.json()["error"] == "precondition_failed"
    assert (
        api.call("get-user", "GET", path, admin, headers={"If-None-Match": tag}).status_code == 200
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "at least one"),
        ({"role": "admin"}, "role"),
        ({"name": None}, "name"),
        ({"user_metadata": {"a$b": 1}}, "user_metadata"),
        ({"picture": "http://insecure"}, "picture"),
    ],
)
def test_update_user_validates_the_body(api: API, user, admin, body, fragment) -> None:
    response = api.call("update-user", "PATCH", user_path(user["user_id"]), admin, json=body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]


def test_updating_an_unknown_user_is_404(api: API, admin: str) -> None:
    path = user_path("auth0|" + secrets.token_hex(12))
    assert api.call("update-user", "PATCH", path, admin, json={"name": "X"}).status_code == 404
