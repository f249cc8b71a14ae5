"""Issue 26 (2): what another process left in Redis is not trusted as it is.

Whoever can write to the Redis userapi shares (another workload on its network, a leaked
password) planted a JWKS of their own under `userapi:jwks:v1`; a cold pod took it and accepted
the admin tokens they minted (200 before the fix). The Management token lay there as JSON for a
day. Now both are sealed with SHARED_CACHE_KEY (adapters/sealed_store.py): a planted, tampered
or foreign-key entry is a miss (the pod asks Auth0), and the raw bytes hold no token.
Real processes, a Redis of this module's own (its raw bytes are inspected), the emulator.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from userapi.adapters.sealed_store import Keyring
from userapi.domain.users import user_path
from userapi.emulator import DEV_AUDIENCE, DEV_CLIENT_ID

from harness.emulator import EmulatorHandle
from harness.redis_server import RedisServer
from harness.userapi import SHARED_CACHE_KEY, Service, migrate, service_env, start_service

pytestmark = pytest.mark.integration

JWKS_KEY = "userapi:jwks:v1"
TOKEN_KEY = f"userapi:auth0:mgmt-token:{DEV_CLIENT_ID}"
JWKS_ROUTE = "GET /.well-known/jwks.json"
TOKEN_ROUTE = "POST /oauth/token"
ALL_PERMISSIONS = ["read:users", "create:users", "update:users", "delete:users"]
FAILED_CHECK = "ignoring a shared entry that failed its check"


@pytest.fixture(scope="module")
def redis_own() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def raw(redis_own: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_own.url) as client:
        client.flushdb()
        yield client


@pytest.fixture(scope="module")
def database(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
def env(clean_emulator: EmulatorHandle, redis_own: RedisServer, database: str) -> dict[str, str]:
    return service_env(clean_emulator, redis_own.url, database)


@pytest.fixture
def user(clean_emulator: EmulatorHandle) -> dict[str, Any]:
    return clean_emulator.create_user(f"sealed-{secrets.token_hex(4)}@example.com")


@pytest.fixture
def reader(clean_emulator: EmulatorHandle) -> str:
    return clean_emulator.token("auth0|reader0000000000000000000", ["read:users"])


def started(endpoint: str, env: dict[str, str]) -> Service:
    return start_service(endpoint, env)


def _attacker_jwks_and_token(emulator: EmulatorHandle) -> tuple[bytes, str]:
    """A JWKS holding the attacker's own key under the tenant's kid, and an admin token it
    signs with every claim the API checks right."""
    kid = emulator.http.get("/.well-known/jwks.json").json()["keys"][0]["kid"]
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(private.public_key())), "kid": kid, "use": "sig"}
    now = int(time.time())
    claims = {
        "iss": emulator.base_url + "/",
        "aud": DEV_AUDIENCE,
        "sub": "auth0|attacker000000000000000000",
        "iat": now,
        "exp": now + 3600,
        "permissions": ALL_PERMISSIONS,
    }
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid})
    return json.dumps({"keys": [jwk]}).encode(), token


def _raw_get(raw: redis.Redis, key: str) -> bytes | None:
    value = raw.get(key)
    assert value is None or isinstance(value, bytes)
    return value


def _forget_all_but_credentials(raw: redis.Redis) -> None:
    """The cached profiles gone, so that the next read calls the Management API."""
    for key in raw.scan_iter():
        if key not in (JWKS_KEY.encode(), TOKEN_KEY.encode()):
            raw.delete(key)


def _failed_checks(service: Service, key: str) -> int:
    return sum(
        1
        for line in service.log_lines()
        if line.get("message") == FAILED_CHECK and line.get("key") == key
    )


def test_a_planted_jwks_mints_no_admin_token(
    clean_emulator: EmulatorHandle, raw: redis.Redis, env: dict[str, str], user: dict[str, Any]
) -> None:
    planted, forged = _attacker_jwks_and_token(clean_emulator)
    raw.set(JWKS_KEY, planted, px=600_000)  # before the pod's first request: it is cold
    service = started("get-user", env)
    try:
        fetches = clean_emulator.calls(JWKS_ROUTE)
        response = service.get(user_path(user["user_id"]), forged)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "invalid_token"
        # The planted set was a miss: the pod asked Auth0 and put the real set, sealed, back.
        assert clean_emulator.calls(JWKS_ROUTE) == fetches + 1
        assert _failed_checks(service, JWKS_KEY) == 1
        resealed = _raw_get(raw, JWKS_KEY)
        assert resealed is not None
        assert resealed != planted
        assert b"keys" not in resealed
    finally:
        service.close()


def test_the_management_token_is_sealed_and_a_tampered_one_is_a_miss(
    clean_emulator: EmulatorHandle,
    raw: redis.Redis,
    env: dict[str, str],
    user: dict[str, Any],
    reader: str,
) -> None:
    first = started("get-user", env)
    try:
        assert first.get(user_path(user["user_id"]), reader).status_code == 200
    finally:
        first.close()
    entry = _raw_get(raw, TOKEN_KEY)
    assert entry is not None
    token = json.loads(Keyring([SHARED_CACHE_KEY]).open(TOKEN_KEY, entry))["token"]
    assert token.encode() not in entry  # not readable by whoever reads Redis
    assert token.split(".")[1].encode() not in entry
    assert b"expires_at" not in entry

    # One flipped bit: the next cold pod takes it for a miss and fetches a token of its own.
    tampered = bytearray(entry)
    tampered[-1] ^= 1
    raw.set(TOKEN_KEY, bytes(tampered), px=600_000)
    _forget_all_but_credentials(raw)  # so that the read needs the Management API
    before = clean_emulator.calls(TOKEN_ROUTE)
    second = started("get-user", env)
    try:
        assert second.get(user_path(user["user_id"]), reader).status_code == 200
        assert clean_emulator.calls(TOKEN_ROUTE) == before + 1
        assert _failed_checks(second, TOKEN_KEY) == 1
    finally:
        second.close()


def test_a_rotated_key_still_opens_and_a_wrong_key_is_a_miss(
    clean_emulator: EmulatorHandle,
    raw: redis.Redis,
    env: dict[str, str],
    user: dict[str, Any],
    reader: str,
) -> None:
    path = user_path(user["user_id"])
    warm = started("get-user", env)
    try:
        assert warm.get(path, reader).status_code == 200  # JWKS and token sealed with the key
    finally:
        warm.close()
    _forget_all_but_credentials(raw)

    # Rotation, step one: a new key seals, the old one still opens what is in Redis.
    new_key = "a-new-shared-cache-key-" + secrets.token_hex(16)
    before = clean_emulator.stats()
    rotating = started("get-user", {**env, "SHARED_CACHE_KEY": f"{new_key} {SHARED_CACHE_KEY}"})
    try:
        assert rotating.get(path, reader).status_code == 200
        after = clean_emulator.stats()
        assert after.get(JWKS_ROUTE, 0) == before.get(JWKS_ROUTE, 0)
        assert after.get(TOKEN_ROUTE, 0) == before.get(TOKEN_ROUTE, 0)
        assert _failed_checks(rotating, JWKS_KEY) == 0
    finally:
        rotating.close()
    _forget_all_but_credentials(raw)

    # A key that never sealed them: both entries are misses, the pod asks Auth0 and answers.
    before = clean_emulator.stats()
    wrong = started("get-user", {**env, "SHARED_CACHE_KEY": "x" * 40})
    try:
        assert wrong.get(path, reader).status_code == 200
        assert wrong.get(path, reader).status_code == 200
        after = clean_emulator.stats()
        assert after.get(JWKS_ROUTE, 0) == before.get(JWKS_ROUTE, 0) + 1
        assert after.get(TOKEN_ROUTE, 0) == before.get(TOKEN_ROUTE, 0) + 1
        assert _failed_checks(wrong, JWKS_KEY) == 1
        assert _failed_checks(wrong, TOKEN_KEY) == 1
    finally:
        wrong.close()
    # What it sealed in their place opens with its key alone.
    for key in (JWKS_KEY, TOKEN_KEY):
        entry = _raw_get(raw, key)
        assert entry is not None
        Keyring(["x" * 40]).open(key, entry)
        with pytest.raises(ValueError, match="sealed with a key this process does not hold"):
            Keyring([SHARED_CACHE_KEY]).open(key, entry)


def test_a_valid_shared_entry_spares_a_cold_pod_every_auth0_call(
    clean_emulator: EmulatorHandle,
    raw: redis.Redis,
    env: dict[str, str],
    user: dict[str, Any],
    reader: str,
) -> None:
    path = user_path(user["user_id"])
    warm = started("get-user", env)
    try:
        assert warm.get(path, reader).status_code == 200
    finally:
        warm.close()
    _forget_all_but_credentials(raw)  # the profile too must come from Auth0
    before = clean_emulator.stats()
    cold = started("get-user", env)
    try:
        assert cold.get(path, reader).status_code == 200
    finally:
        cold.close()
    after = clean_emulator.stats()
    assert after.get(JWKS_ROUTE, 0) == before.get(JWKS_ROUTE, 0)  # the shared JWKS served
    assert after.get(TOKEN_ROUTE, 0) == before.get(TOKEN_ROUTE, 0)  # the shared token too


def test_without_a_key_nothing_is_shared_and_nothing_shared_is_trusted(
    clean_emulator: EmulatorHandle,
    raw: redis.Redis,
    env: dict[str, str],
    user: dict[str, Any],
    reader: str,
) -> None:
    keyless = {name: value for name, value in env.items() if name != "SHARED_CACHE_KEY"}
    planted, forged = _attacker_jwks_and_token(clean_emulator)
    raw.set(JWKS_KEY, planted, px=600_000)
    service = started("get-user", keyless)
    try:
        assert service.get(user_path(user["user_id"]), forged).status_code == 401
        assert service.get(user_path(user["user_id"]), reader).status_code == 200
        warnings = [
            line
            for line in service.log_lines()
            if line.get("message", "").startswith("no usable shared-cache key")
        ]
        assert len(warnings) == 1
    finally:
        service.close()
    assert _raw_get(raw, JWKS_KEY) == planted  # neither read nor replaced
    assert _raw_get(raw, TOKEN_KEY) is None  # the token never left the process


def test_auth0_events_is_given_no_key_and_needs_none(
    clean_emulator: EmulatorHandle, raw: redis.Redis, env: dict[str, str], user: dict[str, Any]
) -> None:
    """Least privilege: auth0-events verifies no access token and never calls Auth0, so it
    holds no key (the chart mounts none there) and, without one, complains of nothing."""
    keyless = {name: value for name, value in env.items() if name != "SHARED_CACHE_KEY"}
    keyless["AUTH0_EVENTS_SECRET"] = "events-" + secrets.token_hex(8)
    del keyless["AUTH0_CLIENT_SECRET"]
    service = started("auth0-events", keyless)
    try:
        response = service.http.post(
            "/events/auth0",
            headers={"Authorization": f"Bearer {keyless['AUTH0_EVENTS_SECRET']}"},
            json={
                "id": "evt_" + secrets.token_hex(8),
                "source": "urn:auth0:tenant",
                "specversion": "1.0",
                "type": "user.deleted",
                "time": "2026-11-23T00:00:00Z",
                "data": {"object": user},
            },
        )
        assert response.status_code == 200, response.text
        assert not [line for line in service.log_lines() if "shared-cache" in line["message"]]
    finally:
        service.close()
