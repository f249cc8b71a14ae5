"""What holds across endpoints: docs off, time budgets, `me`, permissions, no-store.

Each endpoint runs as its own process (tests/integration/conftest.py's `api`), sharing Redis
and PostgreSQL through PgBouncer."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import pytest
from userapi.domain.users import user_path

from harness.emulator import EmulatorHandle
from harness.userapi import service_env, start_services
from tests.support.api import API, POST_ROUTE, new_user_body, post_user

pytestmark = pytest.mark.integration


def test_no_deployed_service_serves_docs_or_its_openapi(api: API) -> None:
    # API_DOCS is off unless set: a deployed endpoint hands out no map of the API.
    for endpoint, service in api.services.items():
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            response = service.http.get(path)
            assert response.status_code == 404, (endpoint, path, response.text)
            assert response.json()["error"] == "not_found"


def test_with_api_docs_each_service_serves_its_own_openapi(
    emulator: EmulatorHandle, redis_server: Any, database_url: str
) -> None:
    env = service_env(emulator, redis_server.url, database_url)
    env["API_DOCS"] = "true"
    service = start_services(["delete-user"], env)["delete-user"]
    try:
        spec = service.http.get("/openapi.json").json()
        assert spec["info"]["title"] == "userapi: delete-user"
        assert list(spec["paths"]) == ["/users/{user_id}"]
        assert service.http.get("/docs").status_code == 200
    finally:
        service.close()


def test_time_budget_holds_for_writes(api: API, admin: str, clean_emulator) -> None:
    clean_emulator.fault(POST_ROUTE, kind="hang", times=1)
    started = time.monotonic()
    response = post_user(api, admin, new_user_body())
    assert response.status_code == 504
    assert time.monotonic() - started < 5
    assert clean_emulator.calls(POST_ROUTE) == 1  # a POST whose answer was lost is not retried


@pytest.mark.parametrize(
    ("endpoint", "method", "body"),
    [("get-user", "GET", None), ("update-user", "PATCH", {"name": "x"}),
     ("delete-user", "DELETE", None)],
)  # fmt: skip
def test_me_with_an_application_token_is_400(api: API, clean_emulator, endpoint, method, body):
    app_token = clean_emulator.app_token()
    response = api.call(endpoint, method, "/users/me", app_token, json=body)
    assert response.status_code == 400, response.text
    assert "application" in response.json()["message"]


ALL_FOUR = "read:users create:users update:users delete:users"


def _guarded_calls(victim: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """One request per permission-guarded operation, each acting on `victim`, another user."""
    path = user_path(victim["user_id"])
    return [
        ("get-user", "GET", path, {}),
        ("list-users", "GET", "/users", {"params": {"q": f'email:"{victim["email"]}"'}}),
        ("create-user", "POST", "/users", {"json": new_user_body()}),
        ("update-user", "PATCH", path, {"json": {"name": "Taken Over", "plan": "team"}}),
        ("delete-user", "DELETE", path, {}),
    ]


def test_a_user_cannot_grant_themselves_permissions_through_scope(
    api: API, user, clean_emulator
) -> None:
    # An API without RBAC (Auth0's default for a new one) gives a login any scope it asks for.
    clean_emulator.rbac(False)
    attacker = clean_emulator.create_user(f"attacker-{secrets.token_hex(4)}@example.com")
    token = clean_emulator.login(attacker["email"], "Pa55word!x", "openid " + ALL_FOUR)
    _, payload, _ = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["scope"] == "openid " + ALL_FOUR
    assert "permissions" not in claims
    clean_emulator.reset()  # Auth0's calls counted from here
    for endpoint, method, path, kwargs in _guarded_calls(user):
        response = api.call(endpoint, method, path, token, **kwargs)
        assert response.status_code == 403, (endpoint, response.text)
        assert response.json()["error"] == "insufficient_scope"
    # Nothing reached Auth0's write routes, and the victim is as it was.
    assert clean_emulator.calls(POST_ROUTE) == 0
    assert clean_emulator.calls("PATCH /api/v2/users/{id}") == 0
    assert clean_emulator.calls("DELETE /api/v2/users/{id}") == 0
    reader = clean_emulator.app_token("read:users")
    victim = api.call("get-user", "GET", user_path(user["user_id"]), reader).json()
    assert victim["name"] == "Original Name"


def test_an_application_token_is_authorized_by_its_client_grant(api: API, user, clean_emulator):
    reader = clean_emulator.app_token("read:users")
    response = api.call("get-user", "GET", user_path(user["user_id"]), reader)
    assert response.status_code == 200, response.text
    assert api.call("delete-user", "DELETE", user_path(user["user_id"]), reader).status_code == 403
    everything = clean_emulator.app_token()  # no scope asked: the whole grant
    for endpoint, method, path, kwargs in _guarded_calls(user):
        response = api.call(endpoint, method, path, everything, **kwargs)
        assert response.status_code < 300, (endpoint, response.text)


def test_a_users_permissions_claim_authorizes_whatever_scope_was_asked(
    api: API, user, clean_emulator
) -> None:
    # The seed admin holds all four permissions; its login asked for none of them.
    token = clean_emulator.login("grace@example.com", "admin admin admin admin", "openid")
    for endpoint, method, path, kwargs in _guarded_calls(user):
        response = api.call(endpoint, method, path, token, **kwargs)
        assert response.status_code < 300, (endpoint, response.text)


def test_every_response_carrying_a_profile_forbids_storing_it(api: API, user, admin) -> None:
    path = user_path(user["user_id"])
    read = api.call("get-user", "GET", path, admin)  # the direct route
    answers = {
        "get-user": read,
        "get-user 304": api.call(
            "get-user", "GET", path, admin, headers={"If-None-Match": read.headers["etag"]}
        ),
        "list-users": api.call(
            "list-users", "GET", "/users", admin, params={"q": f'email:"{user["email"]}"'}
        ),
        "create-user": post_user(api, admin, new_user_body()),
        "update-user": api.call("update-user", "PATCH", path, admin, json={"nickname": "n"}),
    }
    for name, response in answers.items():
        assert response.status_code in (200, 201, 304), (name, response.text)
        assert response.headers.get("cache-control") == "no-store", name
