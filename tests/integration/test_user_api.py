"""The whole API, each endpoint its own process, sharing Redis and PostgreSQL through PgBouncer."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from userapi.domain.users import user_path

from harness.emulator import EmulatorHandle, cloud_event, now_iso
from harness.postgres import PostgresServer
from harness.userapi import Service, migrate, service_env, start_services
from tests.support import bearer

pytestmark = pytest.mark.integration

EVENTS_SECRET = "test-events-secret-0123456789"
GET_ROUTE = "GET /api/v2/users/{id}"
POST_ROUTE = "POST /api/v2/users"
ENDPOINTS = ("get-user", "list-users", "create-user", "update-user", "delete-user", "auth0-events")


class API:
    def __init__(self, services: dict[str, Service], db: str, postgres: PostgresServer) -> None:
        self.services = services
        self.db = db
        self.postgres = postgres

    def call(
        self, endpoint: str, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        return bearer.request(self.services[endpoint].http, method, path, token, **kwargs)

    def sql(self, query: str) -> list[str]:
        return self.postgres.psql(query, database=self.db).stdout.splitlines()


@pytest.fixture(scope="module")
def api(
    emulator: EmulatorHandle, redis_server: Any, database_url: str, postgres_server: PostgresServer
) -> Iterator[API]:
    migrate(database_url)
    env = service_env(emulator, redis_server.url, database_url)
    env["AUTH0_EVENTS_SECRET"] = EVENTS_SECRET
    started = start_services(ENDPOINTS, env)
    yield API(started, database_url.rsplit("/", 1)[1], postgres_server)
    for service in started.values():
        service.close()


@pytest.fixture
def admin(clean_emulator: EmulatorHandle) -> str:
    return clean_emulator.token(
        "auth0|admin0000000000000000000",
        ["read:users", "create:users", "update:users", "delete:users"],
    )


@pytest.fixture
def user(clean_emulator: EmulatorHandle) -> dict[str, Any]:
    return clean_emulator.create_user(
        f"u-{secrets.token_hex(4)}@example.com",
        name="Original Name",
        user_metadata={"theme": "dark", "lang": "en"},
    )


# list-users ----------------------------------------------------------------------------------


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


# create-user ---------------------------------------------------------------------------------


def _create(api: API, admin: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.call("create-user", "POST", "/users", admin, json=body, headers=headers)


def _new_user_body(**overrides: Any) -> dict[str, Any]:
    return {
        "email": f"new-{secrets.token_hex(4)}@example.com",
        "password": "Str0ng-passw0rd!",
        "name": "New Person",
        "user_metadata": {"source": "test"},
        "plan": "team",
        **overrides,
    }


def test_create_user_creates_auth0_user_account_and_audit(api: API, admin: str) -> None:
    body = _new_user_body()
    response = _create(api, admin, body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"] == user_path(created["user_id"])
    assert created["email"] == body["email"]
    assert created["account"]["plan"] == "team"
    assert "password" not in created
    audit = api.sql(
        "SELECT actor || ' ' || action || ' ' || changed_fields::text FROM audit_log"
        f" WHERE target_user_id = '{created['user_id']}'"
    )
    assert len(audit) == 1
    assert audit[0].startswith("auth0|admin0000000000000000000 create [")
    assert "password" in audit[0]  # the field's name,
    assert body["password"] not in " ".join(api.sql("SELECT * FROM audit_log"))  # never its value
    fetched = api.call("get-user", "GET", response.headers["location"], admin)
    assert fetched.json()["account"]["plan"] == "team"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (_new_user_body(is_admin=True), "is_admin"),
        (_new_user_body(password=None), "verify_email"),
        (_new_user_body(email="not-an-email"), "email"),
        (_new_user_body(password="short"), "password"),
        (_new_user_body(user_metadata={"a.b": 1}), "user_metadata"),
    ],
)
def test_create_user_validates_the_body(api: API, admin: str, body, fragment) -> None:
    if body.get("password") is None:
        body.pop("password")
    response = _create(api, admin, body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]


def test_an_oversized_body_is_a_413_from_the_real_server(api: API, admin: str) -> None:
    response = api.call("create-user", "POST", "/users", admin, content=b" " * (2 << 20))
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"


def test_create_user_without_password_uses_verify_email(api: API, admin: str) -> None:
    body = _new_user_body(verify_email=True)
    body.pop("password")
    assert _create(api, admin, body).status_code == 201


def test_create_user_needs_create_users(api: API, clean_emulator) -> None:
    token = clean_emulator.token("auth0|reader0000000000000000000", ["read:users"])
    assert (
        api.call("create-user", "POST", "/users", token, json=_new_user_body()).status_code == 403
    )


def test_an_existing_email_is_409(api: API, admin: str) -> None:
    body = _new_user_body()
    assert _create(api, admin, body).status_code == 201
    again = _create(api, admin, body)
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"


def test_a_retry_with_the_same_key_replays_the_response(
    api: API, admin: str, clean_emulator
) -> None:
    body, key = _new_user_body(), secrets.token_hex(8)
    first = _create(api, admin, body, key)
    second = _create(api, admin, body, key)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert clean_emulator.calls(POST_ROUTE) == 1
    other = _create(api, admin, _new_user_body(), key)
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"


def test_the_stored_fingerprint_holds_nothing_of_the_password(
    api: API, admin: str, clean_emulator
) -> None:
    body, key = _new_user_body(), secrets.token_hex(8)
    first = _create(api, admin, body, key)
    assert first.status_code == 201
    # A retry that differs only in the password replays: the password was never fingerprinted.
    other_password = {**body, "password": "An0ther-passw0rd!"}
    retry = _create(api, admin, other_password, key)
    assert (retry.status_code, retry.headers.get("idempotent-replayed")) == (201, "true")
    assert clean_emulator.calls(POST_ROUTE) == 1


def test_concurrent_requests_with_one_key_create_one_user(
    api: API, admin: str, clean_emulator
) -> None:
    body, key = _new_user_body(), secrets.token_hex(8)
    clean_emulator.latency(300)  # the first request is still in Auth0 when the others arrive

    def create(_: int) -> httpx.Response:
        return _create(api, admin, body, key)

    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(create, range(5)))
    assert [r.status_code for r in responses] == [201] * 5
    assert len({r.json()["user_id"] for r in responses}) == 1
    assert clean_emulator.calls(POST_ROUTE) == 1
    user_id = responses[0].json()["user_id"]
    assert api.sql(f"SELECT count(*) FROM accounts WHERE user_id = '{user_id}'") == ["1"]


def test_a_concurrent_create_of_the_same_email_under_another_key_is_409(
    api: API, admin: str, clean_emulator
) -> None:
    body = _new_user_body()
    clean_emulator.latency(300)  # both requests hold fresh claims when Auth0 answers

    def create(key: str) -> httpx.Response:
        return _create(api, admin, body, key)

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(create, [secrets.token_hex(8), secrets.token_hex(8)]))
    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    assert clean_emulator.calls(POST_ROUTE) == 2


def test_a_retry_adopts_the_user_an_attempt_created_without_learning_its_id(
    api: API, admin: str, clean_emulator
) -> None:
    body, key = _new_user_body(), secrets.token_hex(8)
    clean_emulator.fault(POST_ROUTE, kind="hang", times=1)
    lost = _create(api, admin, body, key)
    assert lost.status_code == 504
    # What a lost answer looks like from here: Auth0 did create the user.
    created = clean_emulator.create_user(body["email"], name=body["name"])
    retried = _create(api, admin, body, key)
    assert retried.status_code == 201, retried.text
    assert retried.json()["user_id"] == created["user_id"]


def test_a_retry_finishes_what_a_database_failure_interrupted(
    api: API, admin: str, clean_emulator
) -> None:
    # A trigger makes the account insert fail once the user exists in Auth0.
    api.postgres.psql(
        "CREATE TABLE IF NOT EXISTS test_fail_accounts (armed boolean);"
        "CREATE OR REPLACE FUNCTION test_fail() RETURNS trigger AS $$ BEGIN "
        "IF EXISTS (SELECT 1 FROM test_fail_accounts) THEN RAISE EXCEPTION 'injected'; END IF; "
        "RETURN NEW; END $$ LANGUAGE plpgsql;"
        "DROP TRIGGER IF EXISTS test_fail ON accounts;"
        "CREATE TRIGGER test_fail BEFORE INSERT ON accounts"
        " FOR EACH ROW EXECUTE FUNCTION test_fail();"
        "GRANT SELECT ON test_fail_accounts TO userapi;"
        "INSERT INTO test_fail_accounts VALUES (true);",
        database=api.db,
    )
    body, key = _new_user_body(), secrets.token_hex(8)
    try:
        failed = _create(api, admin, body, key)
        assert failed.status_code == 500
        assert set(failed.json()) == {"error", "message", "request_id"}
        assert "injected" in api.services["create-user"].process.log_text()
    finally:
        api.postgres.psql("DROP TRIGGER test_fail ON accounts", database=api.db)
    retried = _create(api, admin, body, key)
    assert retried.status_code == 201, retried.text
    assert clean_emulator.calls(POST_ROUTE) == 1  # the retry did not create a second user
    assert retried.json()["account"]["plan"] == "team"
    matches = clean_emulator.http.get(
        "/api/v2/users-by-email",
        params={"email": body["email"]},
        headers={"Authorization": f"Bearer {clean_emulator.management_token()}"},
    ).json()
    assert [m["user_id"] for m in matches] == [retried.json()["user_id"]]


# update-user ---------------------------------------------------------------------------------


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


# delete-user ---------------------------------------------------------------------------------


def test_delete_user_is_idempotent_and_clears_everything(api: API, admin: str) -> None:
    created = _create(api, admin, _new_user_body()).json()
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


# auth0-events --------------------------------------------------------------------------------


def _events(
    api: API, payload: Any, secret: str | None = EVENTS_SECRET, raw: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    content = raw if raw is not None else json.dumps(payload)
    return api.call(
        "auth0-events",
        "POST",
        "/events/auth0",
        content=content,
        headers={**headers, "Content-Type": "application/json"},
    )


def test_events_need_the_shared_secret(api: API, user) -> None:
    event = cloud_event("user.updated", user)
    assert _events(api, event, secret=None).status_code == 401
    assert _events(api, event, secret="wrong").status_code == 401


def test_an_updated_event_refreshes_readers_and_older_ones_are_ignored(
    api: API, user, admin, clean_emulator
) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200  # cached
    before = now_iso()
    changed = clean_emulator.update_user(user["user_id"], name="Changed In Dashboard")
    newer = cloud_event("user.updated", changed)
    # Older than the profile the cache holds, and naming data it never takes from an event.
    older = cloud_event("user.updated", user, name="Stale Name")
    older["time"] = before
    result = _events(api, [newer, older, newer])  # out of order, and newer delivered twice
    assert result.status_code == 200, result.text
    assert result.json() | {"rejected": []} == {
        "received": 3,
        "applied": 1,
        "duplicates": 1,
        "ignored": 1,
        "rejected": [],
        "rejected_total": 0,
    }
    clean_emulator.reset()
    assert api.call("get-user", "GET", path, admin).json()["name"] == "Changed In Dashboard"
    assert api.call("get-user", "GET", path, admin).json()["name"] == "Changed In Dashboard"
    assert clean_emulator.calls(GET_ROUTE) == 1  # an event carries no profile: Auth0's, cached


def test_log_stream_writes_and_deletions_invalidate(api: API, user, admin, clean_emulator) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200
    entry = {
        "log_id": secrets.token_hex(8),
        "data": {
            "date": now_iso(),
            "type": "sapi",
            "description": "Update a user",
            "user_id": "auth0|theadminwhodidit0000000",
            "details": {
                "request": {
                    "method": "patch",
                    "path": "/api/v2/users/" + path.split("/")[-1],
                    "body": {"name": "x"},
                }
            },
        },
    }
    lines = "\n".join([json.dumps(entry), "{not json", json.dumps({"unexpected": True})])
    result = _events(api, None, raw=lines)
    assert result.status_code == 200, result.text
    assert result.json()["applied"] == 1
    assert [r["index"] for r in result.json()["rejected"]] == [1, 2]
    clean_emulator.reset()
    assert api.call("get-user", "GET", path, admin).status_code == 200
    assert clean_emulator.calls(GET_ROUTE) == 1  # the entry was dropped: fetched again


@pytest.mark.parametrize(
    ("method", "suffix", "status"),
    [("delete", "", 404), ("delete", "/multifactor/google-authenticator", 200)],
)
def test_a_logged_management_delete_of_the_user_leaves_a_tombstone(
    api: API, user, admin, clean_emulator, method: str, suffix: str, status: int
) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200
    request = {"method": method, "path": "/api/v2/users/" + path.split("/")[-1] + suffix}
    entry = {
        "log_id": secrets.token_hex(8),
        "data": {"type": "sapi", "date": now_iso(),
                 "user_id": "auth0|theadminwhodidit0000000", "details": {"request": request}},
    }  # fmt: skip
    assert _events(api, [entry]).json()["applied"] == 1
    # Deleting the user is a tombstone (404 from the cache); deleting one of its
    # sub-resources only invalidates, and the next read fetches the user again.
    assert api.call("get-user", "GET", path, admin).status_code == status


def test_a_deleted_event_is_served_as_404_and_an_older_update_cannot_undo_it(
    api: API, user, admin, clean_emulator
) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200
    late = cloud_event("user.updated", user)
    time.sleep(0.01)
    deleted = cloud_event("user.deleted", user)
    result = _events(api, [deleted, late])  # the older update arrives after the deletion
    assert (result.json()["applied"], result.json()["ignored"]) == (1, 1), result.text
    clean_emulator.reset()
    assert api.call("get-user", "GET", path, admin).status_code == 404
    assert clean_emulator.calls(GET_ROUTE) == 0  # the cache knows it is gone


def test_odd_items_are_rejected_one_by_one_never_a_500(
    api: API, user, admin, clean_emulator
) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200  # cached, with a "Z" time
    clean_emulator.update_user(user["user_id"], name="Naive Time")
    naive = cloud_event("user.updated", user)
    naive["time"] = naive["time"].removesuffix("Z")  # no offset: read as UTC
    odd_details = {"log_id": secrets.token_hex(8), "data": {"type": "sapi", "details": "oops"}}
    deletion = {
        "log_id": secrets.token_hex(8),
        "data": {"type": "sdu", "user_id": "auth0|x1", "date": now_iso()},
    }
    timeless = {"log_id": secrets.token_hex(8), "data": {"type": "sdu", "user_id": "auth0|x1"}}
    result = _events(api, [naive, odd_details, deletion, timeless])
    assert result.status_code == 200, result.text
    rejected = [r["index"] for r in result.json()["rejected"]]
    assert (result.json()["applied"], rejected) == (2, [1, 3])
    assert api.call("get-user", "GET", path, admin).json()["name"] == "Naive Time"


@pytest.mark.parametrize("raw", ["", "not json at all", "[1, 2]", '{"specversion": "1.0"}'])
def test_unreadable_deliveries_are_400(api: API, raw: str) -> None:
    response = _events(api, None, raw=raw)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "message", "request_id"}


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
    response = _create(api, admin, _new_user_body())
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


# authorization -------------------------------------------------------------------------------

ALL_FOUR = "read:users create:users update:users delete:users"


def _guarded_calls(victim: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """One request per permission-guarded operation, each acting on `victim`, another user."""
    path = user_path(victim["user_id"])
    return [
        ("get-user", "GET", path, {}),
        ("list-users", "GET", "/users", {"params": {"q": f'email:"{victim["email"]}"'}}),
        ("create-user", "POST", "/users", {"json": _new_user_body()}),
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


# caching of responses ------------------------------------------------------------------------


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
        "create-user": _create(api, admin, _new_user_body()),
        "update-user": api.call("update-user", "PATCH", path, admin, json={"nickname": "n"}),
    }
    for name, response in answers.items():
        assert response.status_code in (200, 201, 304), (name, response.text)
        assert response.headers.get("cache-control") == "no-store", name
