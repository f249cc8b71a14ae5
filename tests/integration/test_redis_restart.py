"""Redis restarted on the same address under load (issue 11, reproducer 5; how managed Redis fails
over): no read may cost more than the Redis timeout plus one Auth0 call, and the shared cache is
used again within a second of the new server answering.

Before the fix the pooled connections that died with the old server failed while fresh ones
answered; the store took that for "Redis is busy", and a miss then waited the whole lock time
(PROFILE_LOCK_SECONDS) for a lock nobody held: worst read 2.1 s, cache used again after 3.6 s.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from userapi.domain.users import user_path

from harness.emulator import EmulatorHandle
from harness.redis_server import RedisServer
from harness.userapi import Service, migrate, service_env, start_service

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REDIS_TIMEOUT = 0.25  # the default REDIS_TIMEOUT_SECONDS
AUTH0_LATENCY = 0.1  # each emulated Auth0 call takes this long
# The server's own work per read (token, cache, response) on a shared 2-core machine.
ALLOWANCE = 0.15
USERS = 20
CONCURRENCY = 8


@pytest.fixture
def get_user(
    clean_emulator: EmulatorHandle, redis_alone: RedisServer, database_url: str
) -> Iterator[Service]:
    migrate(database_url)
    service = start_service("get-user", service_env(clean_emulator, redis_alone.url, database_url))
    yield service
    service.close()


async def _load(
    base_url: str, paths: list[str], token: str, until: float
) -> list[tuple[float, float, int]]:
    """(start, seconds, status) of every read, CONCURRENCY at a time, until `until`."""
    samples: list[tuple[float, float, int]] = []
    headers = {"Authorization": f"Bearer {token}"}

    async def worker(client: httpx.AsyncClient, offset: int) -> None:
        index = offset
        while time.monotonic() < until:
            started = time.monotonic()
            response = await client.get(paths[index % len(paths)], headers=headers)
            samples.append((started, time.monotonic() - started, response.status_code))
            index += CONCURRENCY

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as client:
        await asyncio.gather(*(worker(client, i) for i in range(CONCURRENCY)))
    return samples


async def test_a_redis_restart_on_the_same_address_costs_one_timeout_and_under_a_second(
    clean_emulator: EmulatorHandle, redis_alone: RedisServer, get_user: Service
) -> None:
    clean_emulator.latency(AUTH0_LATENCY * 1000)
    marker = secrets.token_hex(3)
    users = [clean_emulator.create_user(f"restart-{marker}-{i}@example.com") for i in range(USERS)]
    paths = [user_path(user["user_id"]) for user in users]
    token = clean_emulator.token("auth0|restarter0000000000000000", ["read:users"])
    # Warm: every profile, the JWKS and the management token in Redis; every pooled connection
    # opened (CONCURRENCY at once), so that all of them die with the server.
    warmed = await _load(get_user.base_url, paths, token, time.monotonic() + 1.5)
    # All the warm-up's lines, or its last few would be taken for the load's.
    warm = len(get_user.request_logs(at_least=len(warmed)))
    assert warm == len(warmed)

    loop = asyncio.get_running_loop()
    load = asyncio.ensure_future(_load(get_user.base_url, paths, token, time.monotonic() + 5))
    await asyncio.sleep(1.0)
    await loop.run_in_executor(None, redis_alone.kill)
    await asyncio.sleep(0.05)
    await loop.run_in_executor(None, redis_alone.start)
    answering = time.monotonic()  # start() returns once the new server accepts connections

    def first_hit() -> float:
        with redis.Redis.from_url(redis_alone.url) as client:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if int(client.info("stats")["keyspace_hits"]) > 0:
                    return time.monotonic()
                time.sleep(0.01)
        return float("inf")

    reused = await loop.run_in_executor(None, first_hit)
    samples = await load

    assert {status for _, _, status in samples} == {200}
    # What each read cost the server (its request log), without the test client's own waits
    # on this shared machine; the client's view is printed beside it.
    served = get_user.request_logs(at_least=warm + len(samples))[warm:]
    assert len(served) == len(samples)
    worst = max(line["duration_ms"] for line in served) / 1000
    worst_seen = max(seconds for _, seconds, _ in samples)
    reuse = reused - answering
    print(
        f"redis restart: {len(samples)} reads; worst read {worst:.3f} s in the server "
        f"({worst_seen:.3f} s at the client); cache used again {reuse:.3f} s after the "
        "new server answered"
    )
    assert worst <= REDIS_TIMEOUT + AUTH0_LATENCY + ALLOWANCE, f"worst read {worst:.3f} s"
    assert reuse <= 1.0, f"the cache was used again only after {reuse:.3f} s"
