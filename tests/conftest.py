"""Session-wide real servers. Each is started on a free port the first time a test needs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import PgBouncer, PostgresServer, RedisServer, stop_all


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pgbouncer(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(postgres_server, pool_size=5, max_db_connections=10)
    yield bouncer
    bouncer.stop()


@pytest.fixture(scope="module")
def database_url(postgres_server: PostgresServer, pgbouncer: PgBouncer) -> str:
    """A fresh database for each test module, reached through PgBouncer in transaction mode."""
    return pgbouncer.dsn(postgres_server.create_database())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all()  # nothing outlives the run, even when a fixture's teardown did not happen
