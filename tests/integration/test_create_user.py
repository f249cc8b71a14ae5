"""create-user: the Auth0 user, the account and audit rows, idempotency keys.

Each endpoint runs as its own process (tests/integration/conftest.py's `api`), sharing Redis
and PostgreSQL through PgBouncer."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from userapi.domain.users import user_path

from tests.support.api import API, POST_ROUTE, new_user_body, post_user

pytestmark = pytest.mark.integration


def test_create_user_creates_auth0_user_account_and_audit(api: API, admin: str) -> None:
    body = new_user_body()
    response = post_user(api, admin, body)
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
        (new_user_body(is_admin=True), "is_admin"),
        (new_user_body(password=None), "verify_email"),
        (new_user_body(email="not-an-email"), "email"),
        (new_user_body(password="short"), "password"),
        (new_user_body(user_metadata={"a.b": 1}), "user_metadata"),
    ],
)
def test_create_user_validates_the_body(api: API, admin: str, body, fragment) -> None:
    if body.get("password") is None:
        body.pop("password")
    response = post_user(api, admin, body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]


def test_an_oversized_body_is_a_413_from_the_real_server(api: API, admin: str) -> None:
    response = api.call("create-user", "POST", "/users", admin, content=b" " * (2 << 20))
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"


def test_create_user_without_password_uses_verify_email(api: API, admin: str) -> None:
    body = new_user_body(verify_email=True)
    body.pop("password")
    assert post_user(api, admin, body).status_code == 201


def test_create_user_needs_create_users(api: API, clean_emulator) -> None:
    token = clean_emulator.token("auth0|reader0000000000000000000", ["read:users"])
    assert api.call("create-user", "POST", "/users", token, json=new_user_body()).status_code == 403


def test_an_existing_email_is_409(api: API, admin: str) -> None:
    body = new_user_body()
    assert post_user(api, admin, body).status_code == 201
    again = post_user(api, admin, body)
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"


def test_a_retry_with_the_same_key_replays_the_response(
    api: API, admin: str, clean_emulator
) -> None:
    body, key = new_user_body(), secrets.token_hex(8)
    first = post_user(api, admin, body, key)
    second = post_user(api, admin, body, key)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert clean_emulator.calls(POST_ROUTE) == 1
    other = post_user(api, admin, new_user_body(), key)
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"


def test_the_stored_fingerprint_holds_nothing_of_the_password(
    api: API, admin: str, clean_emulator
) -> None:
    body, key = new_user_body(), secrets.token_hex(8)
    first = post_user(api, admin, body, key)
    assert first.status_code == 201
    # A retry that differs only in the password replays: the password was never fingerprinted.
    other_password = {**body, "password": "An0ther-passw0rd!"}
    retry = post_user(api, admin, other_password, key)
    assert (retry.status_code, retry.headers.get("idempotent-replayed")) == (201, "true")
    assert clean_emulator.calls(POST_ROUTE) == 1


def test_concurrent_requests_with_one_key_create_one_user(
    api: API, admin: str, clean_emulator
) -> None:
    body, key = new_user_body(), secrets.token_hex(8)
    clean_emulator.latency(300)  # the first request is still in Auth0 when the others arrive

    def create(_: int) -> httpx.Response:
        return post_user(api, admin, body, key)

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
    body = new_user_body()
    clean_emulator.latency(300)  # both requests hold fresh claims when Auth0 answers

    def create(key: str) -> httpx.Response:
        return post_user(api, admin, body, key)

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(create, [secrets.token_hex(8), secrets.token_hex(8)]))
    assert sorted(r.status_code for r in responses) == [201, 409], [r.text for r in responses]
    assert clean_emulator.calls(POST_ROUTE) == 2


def test_a_retry_adopts_the_user_an_attempt_created_without_learning_its_id(
    api: API, admin: str, clean_emulator
) -> None:
    body, key = new_user_body(), secrets.token_hex(8)
    clean_emulator.fault(POST_ROUTE, kind="hang", times=1)
    lost = post_user(api, admin, body, key)
    assert lost.status_code == 504
    # What a lost answer looks like from here: Auth0 did create the user.
    created = clean_emulator.create_user(body["email"], name=body["name"])
    retried = post_user(api, admin, body, key)
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
    body, key = new_user_body(), secrets.token_hex(8)
    try:
        failed = post_user(api, admin, body, key)
        assert failed.status_code == 500
        assert set(failed.json()) == {"error", "message", "request_id"}
        assert "injected" in api.services["create-user"].process.log_text()
    finally:
        api.postgres.psql("DROP TRIGGER test_fail ON accounts", database=api.db)
    retried = post_user(api, admin, body, key)
    assert retried.status_code == 201, retried.text
    assert clean_emulator.calls(POST_ROUTE) == 1  # the retry did not create a second user
    assert retried.json()["account"]["plan"] == "team"
    matches = clean_emulator.http.get(
        "/api/v2/users-by-email",
        params={"email": body["email"]},
        headers={"Authorization": f"Bearer {clean_emulator.management_token()}"},
    ).json()
    assert [m["user_id"] for m in matches] == [retried.json()["user_id"]]
