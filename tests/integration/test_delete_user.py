"""delete-user: idempotent, and nothing left behind.

Each endpoint runs as its own process (tests/integration/conftest.py's `api`), sharing Redis
and PostgreSQL through PgBouncer."""

from __future__ import annotations

import pytest
from userapi.domain.users import user_path

from tests.support.api import API, new_user_body, post_user

pytestmark = pytest.mark.integration


def test_delete_user_is_idempotent_and_clears_everything(api: API, admin: str) -> None:
    created = post_user(api, admin, new_user_body()).json()
    path = user_path(created["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200  # cached
    assert api.call("delete-user", "DELETE", path, admin).status_code == 204
    assert api.call("get-user", "GET", path, admin).status_code == 404  # not served from cache
    assert api.call("delete-user", "DELETE", path, admin).status_code == 204
    assert api.sql(f"SELECT count(*) FROM accounts WHERE user_id = '{created['user_id']}'") == ["0"]
    actions = api.sql(
        f"SELECT action FROM audit_log WHERE target_user_id = '{created['user_id']}'"
        " ORDER BY occurred_at"
    )
    assert actions == ["create", "delete", "delete"]


def test_delete_user_needs_delete_users(api: API, user, clean_emulator) -> None:
    token = clean_emulator.token(user["user_id"], ["update:users"])
    assert api.call("delete-user", "DELETE", "/users/me", token).status_code in (400, 403)
    assert api.call("delete-user", "DELETE", user_path(user["user_id"]), token).status_code == 403
