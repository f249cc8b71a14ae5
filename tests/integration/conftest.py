"""Fixtures for end-to-end tests: the emulator and `userapi serve <endpoint>`, wired to the
session's real Redis and to PostgreSQL through PgBouncer."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from harness.emulator import EmulatorHandle, start_emulator
from harness.postgres import PostgresServer
from harness.redis_server import RedisServer
from harness.userapi import migrate, service_env, start_services
from tests.support.api import API, ENDPOINTS, EVENTS_SECRET


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorHandle]:
    handle = start_emulator(timeout=20)
    yield handle
    handle.close()


@pytest.fixture
def clean_emulator(emulator: EmulatorHandle) -> Iterator[EmulatorHandle]:
    emulator.reset()
    emulator.latency(0)
    yield emulator
    emulator.reset()
    emulator.latency(0)


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


@pytest.fixture
def redis_alone() -> Iterator[RedisServer]:
    """A Redis of this test's own: killing the session's would disturb other tests."""
    server = RedisServer()
    yield server
    server.stop()
