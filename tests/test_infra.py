"""The test servers themselves: real Redis, and PostgreSQL through PgBouncer in transaction mode."""

from __future__ import annotations

import sys
import time

import anyio
import asyncpg
import pytest
import redis.asyncio as aioredis

from harness.pgbouncer import PgBouncer
from harness.postgres import PostgresServer
from harness.processes import ServiceProcess, free_port, wait_for_port
from harness.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_redis_answers_and_survives_a_restart(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        redis_server.kill()
        with pytest.raises(aioredis.ConnectionError):
            await client.get("k")
        redis_server.start()
        assert await client.get("k") is None  # nothing persisted, as configured
        redis_server.stop()
        with pytest.raises(aioredis.ConnectionError):
            await client.ping()
        redis_server.start()  # a clean stop, too, can be undone on the same port
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_paused_redis_answers_nothing_until_resumed(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=0.3)
    try:
        await client.set("k", "before")
        with redis_server.paused():
            with pytest.raises(aioredis.TimeoutError):
                await client.get("k")
            assert redis_server.running  # black-holed, not gone
        assert await client.get("k") == b"before"

        redis_server.pause(0.5)  # resumes by itself
        started = time.monotonic()
        slow = aioredis.Redis.from_url(redis_server.url, socket_timeout=5)
        try:
            assert await slow.get("k") == b"before"
        finally:
            await slow.aclose()
        assert 0.3 < time.monotonic() - started < 4
    finally:
        await client.aclose()


async def test_parameterised_queries_through_pgbouncer_1_18(database_url: str) -> None:
    # Named prepared statements break on PgBouncer < 1.21 in transaction mode: asyncpg with its
    # statement cache off uses unnamed ones, which must work any number of times, interleaved
    # with other clients' transactions on the same server connections.
    async def client(offset: int) -> None:
        connection = await asyncpg.connect(database_url, statement_cache_size=0)
        try:
            for i in range(50):
                assert (
                    await connection.fetchval("SELECT $1::int + $2::int", i, offset) == i + offset
                )
                row = await connection.fetchrow("SELECT $1::text AS t, $2::int AS n", "x", i)
                assert row is not None
                assert (row["t"], row["n"]) == ("x", i)
        finally:
            await connection.close()

    async with anyio.create_task_group() as group:
        for offset in range(8):  # more clients than default_pool_size
            group.start_soon(client, offset)


async def test_transactions_hold_one_server_connection_to_the_end(database_url: str) -> None:
    connection = await asyncpg.connect(database_url, statement_cache_size=0)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS t (n int)")
        async with connection.transaction():
            await connection.execute("INSERT INTO t VALUES (1)")
            pid = await connection.fetchval("SELECT pg_backend_pid()")
            await anyio.sleep(0.05)
            assert await connection.fetchval("SELECT pg_backend_pid()") == pid
            assert await connection.fetchval("SELECT count(*) FROM t") == 1
    finally:
        await connection.close()


async def test_many_clients_share_few_server_connections(
    database_url: str, pgbouncer: PgBouncer
) -> None:
    connections = [await asyncpg.connect(database_url, statement_cache_size=0) for _ in range(20)]
    try:
        backends: set[int] = set()

        async def query(connection: asyncpg.Connection) -> None:
            backends.add(await connection.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)"))

        async with anyio.create_task_group() as group:
            for connection in connections:
                group.start_soon(query, connection)
        database = database_url.rsplit("/", 1)[1]
        assert 0 < len(backends) <= pgbouncer.pool_size  # 20 clients at once, 5 backends
        assert 0 < pgbouncer.server_connections(database) <= pgbouncer.pool_size
        (pool,) = [p for p in pgbouncer.show("POOLS") if p["database"] == database]
        assert int(pool["cl_active"]) + int(pool["cl_waiting"]) == 20
        assert pool["pool_mode"] == "transaction"
    finally:
        for connection in connections:
            await connection.close()


async def test_pgbouncer_checks_passwords(pgbouncer: PgBouncer) -> None:
    wrong = pgbouncer.dsn().replace(":userapi-test-pw@", ":wrong@")
    # PgBouncer 1.18 ends a failed SCRAM exchange with a protocol error, not 28P01.
    with pytest.raises(asyncpg.PostgresError, match=r"password|SASL authentication failed"):
        await asyncpg.connect(wrong, statement_cache_size=0)


async def test_a_killed_pgbouncer_restarts_on_its_port(postgres_server: PostgresServer) -> None:
    bouncer = PgBouncer(postgres_server)
    try:
        for _ in range(2):
            connection = await asyncpg.connect(bouncer.dsn(), statement_cache_size=0)
            assert await connection.fetchval("SELECT current_user") == "userapi"
            await connection.close()
            bouncer.kill()
            with pytest.raises(ConnectionRefusedError):
                await asyncpg.connect(bouncer.dsn(), statement_cache_size=0, timeout=2)
            bouncer.start()
    finally:
        bouncer.stop()


def test_a_test_may_leave_the_session_servers_broken(
    redis_server: RedisServer, pgbouncer: PgBouncer
) -> None:
    redis_server.pause()
    pgbouncer.kill()


async def test_the_next_test_gets_them_back_working(
    redis_server: RedisServer, pgbouncer: PgBouncer
) -> None:
    # The teardown hook in tests/conftest.py resumed Redis and restarted PgBouncer.
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=2)
    try:
        assert await client.ping()
    finally:
        await client.aclose()
    connection = await asyncpg.connect(pgbouncer.dsn(), statement_cache_size=0, timeout=5)
    assert await connection.fetchval("SELECT 1") == 1
    await connection.close()


def test_service_process_output_and_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERAPI_TEST_FROM_SHELL", "leaked")
    port = free_port()
    script = (
        "import http.server, os, signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
        "print('serving', os.environ['GREETING'], os.environ.get('USERAPI_TEST_FROM_SHELL'))\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)"
        ".serve_forever()\n"
    )
    process = ServiceProcess([sys.executable, "-c", script], env={"GREETING": "hello"})
    process.wait_healthy(f"http://127.0.0.1:{port}/", timeout=10)
    wait_for_port("127.0.0.1", port, 1)
    # Only what the test passes, over a minimal base: the developer's shell does not leak in.
    assert "serving hello None" in process.log_text()
    assert process.terminate(timeout=5) == 3  # SIGTERM, handled: not a SIGKILL
    assert not process.running


def test_a_service_that_dies_reports_its_output() -> None:
    process = ServiceProcess([sys.executable, "-c", "print('boom'); raise SystemExit(2)"])
    with pytest.raises(RuntimeError, match="boom"):
        process.wait_healthy(f"http://127.0.0.1:{free_port()}/", timeout=10)
    assert process.wait(timeout=5) == 2
