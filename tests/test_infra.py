"""The test servers themselves: real Redis, and PostgreSQL through PgBouncer in transaction mode."""

from __future__ import annotations

import anyio
import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.support import PgBouncer, RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_redis_answers_and_survives_a_restart(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.set("k", "v")
    assert await client.get("k") == b"v"
    redis_server.kill()
    with pytest.raises(aioredis.ConnectionError):
        await client.get("k")
    redis_server.start()
    assert await client.get("k") is None  # nothing persisted, as configured
    await client.aclose()


async def test_parameterised_queries_through_pgbouncer_1_18(database_url: str) -> None:
    # Named prepared statements break on PgBouncer < 1.21 in transaction mode: asyncpg with its
    # statement cache off uses unnamed ones, which must work any number of times.
    connection = await asyncpg.connect(database_url, statement_cache_size=0)
    try:
        for i in range(50):
            assert await connection.fetchval("SELECT $1::int + 1", i) == i + 1
    finally:
        await connection.close()


async def test_many_clients_share_few_server_connections(
    database_url: str, pgbouncer: PgBouncer
) -> None:
    connections = [await asyncpg.connect(database_url, statement_cache_size=0) for _ in range(20)]
    try:
        async with anyio.create_task_group() as group:
            for connection in connections:
                group.start_soon(connection.execute, "SELECT pg_sleep(0.05)")
        database = database_url.rsplit("/", 1)[1]
        servers = [s for s in pgbouncer.show("SERVERS") if s.get("database") == database]
        assert 0 < len(servers) <= 5  # default_pool_size, although 20 clients ran at once
    finally:
        for connection in connections:
            await connection.close()
