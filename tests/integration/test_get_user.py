"""get-user as a real process against real Redis, PostgreSQL through PgBouncer, and the emulator."""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm
from userapi.adapters.shared_store import key_segment
from userapi.domain.users import user_path
from userapi.emulator import DEV_AUDIENCE

from harness.emulator import EmulatorHandle
from harness.userapi import Service, migrate, service_env, start_service
from tests.support import tokens

pytestmark = pytest.mark.integration

GET_USER_ROUTE = "GET /api/v2/users/{id}"
TOKEN_ROUTE = "POST /oauth/token"


@pytest.fixture(scope="module")
def database(database_url: str) -> str:
    output = migrate(database_url)
    assert "0001" in output
    return database_url


@pytest.fixture(scope="module")
def service(emulator: EmulatorHandle, redis_server: Any, database: str) -> Iterator[Service]:
    env = service_env(emulator, redis_server.url, database)
    env["API_DOCS"] = "true"  # test_openapi_declares_the_response_model reads it
    svc = start_service("get-user", env)
    yield svc
    svc.close()


@pytest.fixture
def user(clean_emulator: EmulatorHandle) -> dict[str, Any]:
    """A fresh Auth0 user per test, so no test sees another's cache entries."""
    return clean_emulator.create_user(
        f"user-{secrets.token_hex(4)}@example.com",
        name="Grace Hopper",
        user_metadata={"theme": "dark"},
        app_metadata={"role": "admin"},
    )


@pytest.fixture
def reader(clean_emulator: EmulatorHandle) -> str:
    return clean_emulator.token("auth0|reader0000000000000000000", ["read:users"])


def test_reads_a_profile_and_its_account(service, user, reader, database) -> None:
    import asyncio

    async def insert_account() -> None:
        connection = await asyncpg.connect(database, statement_cache_size=0)
        try:
            await connection.execute(
                "INSERT INTO accounts (user_id, created_at, updated_at, plan, preferences) "
                "VALUES ($1, now(), now(), 'pro', '{\"lang\": \"en\"}'::jsonb)",
                user["user_id"],
            )
        finally:
            await connection.close()

    asyncio.run(insert_account())
    response = service.get(user_path(user["user_id"]), reader)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user["user_id"]
    assert body["email"] == user["email"]
    assert body["name"] == "Grace Hopper"
    assert body["user_metadata"] == {"theme": "dark"}
    assert body["app_metadata"] is None  # not configured to be shown
    assert "identities" not in body
    assert body["account"]["plan"] == "pro"
    assert body["account"]["preferences"] == {"lang": "en"}
    assert len(response.headers["x-request-id"]) >= 16


def test_a_user_without_an_account_row_has_account_null(service, user, reader) -> None:
    response = service.get(user_path(user["user_id"]), reader)
    assert response.status_code == 200
    assert response.json()["account"] is None


def test_the_second_read_makes_no_auth0_call(service, user, reader, clean_emulator) -> None:
    assert service.get(user_path(user["user_id"]), reader).status_code == 200
    assert service.get(user_path(user["user_id"]), reader).status_code == 200
    assert clean_emulator.calls(GET_USER_ROUTE) == 1
    path = f"/users/{user['user_id']}"
    outcomes = [line["cache"] for line in service.request_logs(path, at_least=2)]
    assert outcomes == ["miss", "hit"]


def test_100_concurrent_first_reads_make_one_auth0_call(
    service, user, reader, clean_emulator
) -> None:
    clean_emulator.latency(200)  # keep the first fetch in flight while the others arrive
    limits = httpx.Limits(max_connections=100)
    with httpx.Client(base_url=service.base_url, timeout=30, limits=limits) as client:

        def read(_: int) -> int:
            path = user_path(user["user_id"])
            return client.get(path, headers={"Authorization": f"Bearer {reader}"}).status_code

        with ThreadPoolExecutor(max_workers=100) as pool:
            statuses = list(pool.map(read, range(100)))
    assert statuses == [200] * 100
    assert clean_emulator.calls(GET_USER_ROUTE) == 1


def test_answers_stay_fast_while_redis_is_dead(service, user, reader, redis_server) -> None:
    path = user_path(user["user_id"])
    assert service.get(path, reader).status_code == 200
    redis_server.kill()
    try:
        durations = []
        for _ in range(20):
            started = time.perf_counter()
            response = service.get(path, reader)
            durations.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        # Misses now go to Auth0 (no latency configured): a request must not wait for Redis.
        assert max(durations) < 0.5, durations
    finally:
        redis_server.start()


def test_answers_stay_fast_while_redis_hangs(service, user, reader, redis_server) -> None:
    path = user_path(user["user_id"])
    assert service.get(path, reader).status_code == 200
    redis_server.pause()
    try:
        durations = []
        for _ in range(10):
            started = time.perf_counter()
            assert service.get(path, reader).status_code == 200
            durations.append(time.perf_counter() - started)
        assert max(durations) < 0.5, durations
    finally:
        redis_server.resume()


def _cache_then_expire(service: Service, token: str, redis_url: str, user_id: str) -> None:
    """Get the profile into Redis, then make it stale (past its fresh TTL, in its stale window).

    A process that saw Redis fail skips it for a second, so reading may take a few tries.
    """
    with redis.Redis.from_url(redis_url) as client:
        _expire(client, service, token, user_id)


def _expire(client: redis.Redis, service: Service, token: str, user_id: str) -> None:
    key = f"userapi:profile:v3:{key_segment(user_id)}"
    deadline = time.monotonic() + 5
    while (raw := client.get(key)) is None:
        assert time.monotonic() < deadline, "the profile never reached Redis"
        time.sleep(0.2)
        client.delete(key)
        assert service.get(user_path(user_id), token).status_code == 200
    entry = json.loads(raw)
    entry["fresh_until"] = time.time() - 1
    client.set(key, json.dumps(entry), keepttl=True)


@pytest.mark.parametrize("fault", [{"kind": "status", "status": 503}, {"kind": "hang"}])
def test_a_stale_profile_is_served_when_auth0_fails(
    service, user, reader, clean_emulator, redis_server, fault
) -> None:
    path = user_path(user["user_id"])
    assert service.get(path, reader).status_code == 200
    _cache_then_expire(service, reader, redis_server.url, user["user_id"])
    clean_emulator.fault(GET_USER_ROUTE, times=None, **fault)
    response = service.get(path, reader)
    assert response.status_code == 200, response.text
    assert response.json()["email"] == user["email"]
    logged = f"/users/{user['user_id']}"
    deadline = time.monotonic() + 3  # the log line is written just after the response
    while service.request_logs(logged)[-1]["cache"] != "stale" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert service.request_logs(logged)[-1]["cache"] == "stale"


@pytest.mark.parametrize(
    ("fault", "status", "error"),
    [
        ({"kind": "status", "status": 500}, 502, "auth0_unavailable"),
        ({"kind": "status", "status": 503}, 502, "auth0_unavailable"),
        ({"kind": "hang"}, 504, "auth0_timeout"),
    ],
)
def test_without_a_cached_profile_auth0_failures_are_json_errors(
    service, user, reader, clean_emulator, fault, status, error
) -> None:
    clean_emulator.fault(GET_USER_ROUTE, times=None, **fault)
    started = time.perf_counter()
    response = service.get(user_path(user["user_id"]), reader, **{"X-Request-Id": "req-42"})
    assert time.perf_counter() - started < 5  # within the request budget, not a hang
    assert response.status_code == status
    assert response.json() == {
        "error": error,
        "message": response.json()["message"],
        "request_id": "req-42",
    }
    if fault["kind"] == "status":
        assert clean_emulator.calls(GET_USER_ROUTE) > 1  # idempotent: retried


def test_429_waits_for_x_ratelimit_reset_and_is_served(
    service, user, reader, clean_emulator
) -> None:
    reset = int(time.time()) + 1
    clean_emulator.fault(
        GET_USER_ROUTE,
        kind="status",
        status=429,
        times=1,
        headers={
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-limit": "10",
            "x-ratelimit-remaining": "0",
        },
    )
    response = service.get(user_path(user["user_id"]), reader)
    assert response.status_code == 200, response.text
    assert time.time() >= reset - 0.05
    assert clean_emulator.calls(GET_USER_ROUTE) == 2


def test_429_beyond_the_budget_is_503_with_retry_after(
    service, user, reader, clean_emulator
) -> None:
    clean_emulator.fault(
        GET_USER_ROUTE,
        kind="status",
        status=429,
        times=None,
        headers={"x-ratelimit-reset": str(int(time.time()) + 60)},
    )
    response = service.get(user_path(user["user_id"]), reader)
    assert response.status_code == 503
    assert response.json()["error"] == "rate_limited"
    assert 50 <= int(response.headers["retry-after"]) <= 61


def _public_pem(emulator: EmulatorHandle) -> tuple[bytes, str]:
    jwk = emulator.http.get("/.well-known/jwks.json").json()["keys"][-1]
    pem = RSAAlgorithm.from_jwk(jwk).public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, jwk["kid"]


def _bad_token(emulator: EmulatorHandle, case: str, sub: str) -> str | None:
    now = int(time.time())
    good = {
        "iss": emulator.base_url + "/",
        "sub": sub,
        "aud": DEV_AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "permissions": ["read:users"],
    }
    if case == "none":
        return None
    if case == "alg_none":
        return tokens.alg_none(good)
    if case == "hs256_public_key":
        return tokens.hs256_with_public_key(good, *_public_pem(emulator))
    if case == "expired":
        return emulator.sign({**good, "iat": now - 7200, "exp": now - 3600})
    if case == "wrong_aud":
        return emulator.sign({**good, "aud": "https://another.api"})
    if case == "wrong_iss":
        return emulator.sign({**good, "iss": "https://evil.example.com/"})
    if case == "unknown_kid":
        return emulator.sign(good, headers={"kid": "unknown-kid"})
    if case == "bad_signature":
        return tokens.tamper_signature(emulator.sign(good))
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "none",
        "alg_none",
        "hs256_public_key",
        "expired",
        "wrong_aud",
        "wrong_iss",
        "unknown_kid",
        "bad_signature",
    ],
)
def test_401_for_missing_or_invalid_tokens(service, user, clean_emulator, case) -> None:
    token = _bad_token(clean_emulator, case, user["user_id"])
    response = service.get(user_path(user["user_id"]), token)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    body = response.json()
    assert body["error"] == "invalid_token"
    assert body["request_id"] == response.headers["x-request-id"]
    assert clean_emulator.calls(GET_USER_ROUTE) == 0


def test_403_without_read_users_for_another_user(service, user, clean_emulator) -> None:
    token = clean_emulator.token("auth0|someoneelse00000000000000", ["update:users"])
    response = service.get(user_path(user["user_id"]), token)
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert clean_emulator.calls(GET_USER_ROUTE) == 0


def test_me_and_own_id_need_no_permission(service, user, clean_emulator) -> None:
    token = clean_emulator.token(user["user_id"], [])
    for path in ("/users/me", user_path(user["user_id"])):
        response = service.get(path, token)
        assert response.status_code == 200, response.text
        assert response.json()["user_id"] == user["user_id"]


@pytest.mark.parametrize(
    "bad_id",
    ["not-an-id", "auth0|", "auth0|abc<script>", "|abc", "auth0|" + "a" * 300, "auth0|a b"],
)
def test_400_for_a_malformed_user_id(service, reader, bad_id) -> None:
    response = service.get("/users/" + bad_id.replace("|", "%7C").replace(" ", "%20"), reader)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_user_id"


def test_404_for_an_unknown_user(service, reader, clean_emulator) -> None:
    missing = "auth0|" + secrets.token_hex(12)
    assert service.get(user_path(missing), reader).status_code == 404
    response = service.get(user_path(missing), reader)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert clean_emulator.calls(GET_USER_ROUTE) == 1  # the 404 was remembered


def test_healthz_does_not_call_auth0(service, clean_emulator) -> None:
    response = service.get("/healthz")
    assert response.status_code == 200
    assert sum(clean_emulator.stats().values()) == 0


def test_request_ids_are_kept_when_sane_and_replaced_otherwise(service) -> None:
    assert (
        service.get("/healthz", **{"X-Request-Id": "abc-123"}).headers["x-request-id"] == "abc-123"
    )
    for unsafe in ("has spaces", "x" * 200, 'quote"s'):
        replaced = service.get("/healthz", **{"X-Request-Id": unsafe}).headers["x-request-id"]
        assert replaced != unsafe
        assert len(replaced) == 32


def test_unknown_routes_answer_json(service) -> None:
    response = service.get("/nope")
    assert response.status_code == 404
    assert set(response.json()) == {"error", "message", "request_id"}


def test_openapi_declares_the_response_model(service) -> None:
    spec = service.get("/openapi.json").json()
    operation = spec["paths"]["/users/{user_id}"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/User"
    )
    assert "401" in operation["responses"]
    assert "503" in operation["responses"]


def test_sigterm_lets_in_flight_requests_finish(
    emulator, redis_server, database, clean_emulator
) -> None:
    env = service_env(emulator, redis_server.url, database)
    env["AUTH0_READ_TIMEOUT_SECONDS"] = "5"
    svc = start_service("get-user", env)
    user = clean_emulator.create_user(f"slow-{secrets.token_hex(4)}@example.com")
    token = clean_emulator.token(user["user_id"], [])
    clean_emulator.latency(800)
    result: dict[str, Any] = {}

    def slow_read() -> None:
        result["response"] = svc.get("/users/me", token)

    reader_thread = threading.Thread(target=slow_read)
    reader_thread.start()
    time.sleep(0.3)  # the request is now waiting on Auth0
    svc.process.process.send_signal(signal.SIGTERM)
    reader_thread.join(timeout=10)
    assert result["response"].status_code == 200
    # uvicorn re-raises SIGTERM once its graceful shutdown is done: exit status 143 (-15 here).
    assert svc.process.process.wait(timeout=10) in (0, -signal.SIGTERM)
    assert any(line.get("message") == "stopped" for line in svc.log_lines())
    svc.close()


def test_cold_processes_share_one_management_token(
    emulator, redis_server, database, clean_emulator
) -> None:
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    clean_emulator.reset()
    services = [
        start_service("get-user", service_env(emulator, redis_server.url, database))
        for _ in range(3)
    ]
    try:
        user = clean_emulator.create_user(f"shared-{secrets.token_hex(4)}@example.com")
        token = clean_emulator.token("auth0|reader0000000000000000000", ["read:users"])
        before = clean_emulator.calls(TOKEN_ROUTE)  # create_user above may have fetched one
        for svc in services:
            svc.http.get("/healthz")
        with ThreadPoolExecutor(max_workers=3) as pool:
            statuses = list(
                pool.map(lambda s: s.get(user_path(user["user_id"]), token).status_code, services)
            )
        assert statuses == [200, 200, 200]
        assert clean_emulator.calls(TOKEN_ROUTE) - before == 1
    finally:
        for svc in services:
            svc.close()


def test_a_cold_pod_answers_a_cached_read_without_calling_or_importing_for_auth0(
    service, user, reader, emulator, redis_server, database
) -> None:
    path = user_path(user["user_id"])
    assert service.get(path, reader).status_code == 200  # JWKS, token, profile now in Redis
    before = emulator.stats()
    env = {**service_env(emulator, redis_server.url, database), "PYTHONPROFILEIMPORTTIME": "1"}
    cold = start_service("get-user", env)
    try:
        assert cold.get(path, reader).status_code == 200
        imported = {
            line.split("|")[-1].strip()
            for line in cold.process.log_text().splitlines()
            if line.startswith("import time:")
        }
    finally:
        cold.close()
    assert emulator.stats() == before  # no JWKS, no token, no profile fetch
    assert "jwt" in imported  # the import log is there...
    assert "httpx" not in imported  # ...and httpx is not in it
