"""The Auth0 rate budget in one process (no Redis: the local bucket), the shared bucket's
queue with pods as budgets of their own on one real Redis, and the profile cache's stale
answers when the budget has no token. Whole processes share it in
tests/integration/test_rate_budget.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from userapi.adapters import rate_budget
from userapi.adapters.rate_budget import BudgetSpent, Priority, RateBudget
from userapi.adapters.shared_store import MemoryStore, RedisStore
from userapi.domain.profile_cache import ProfileCache
from userapi.platform.settings import Settings

from harness.budget_trace import BudgetTrace
from harness.redis_server import RedisServer
from tests.support.settings import make_settings

pytestmark = pytest.mark.anyio

USER = "auth0|64f1c2a9e4b0a1b2c3d4e5f6"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings(**overrides: Any) -> Settings:
    # A budget that only the tests that spend it exhaust.
    return make_settings(
        **{"auth0_management_rate_per_second": 10.0, "auth0_management_burst": 1, **overrides}
    )


async def test_a_call_that_cannot_get_a_token_in_time_is_refused_with_retry_after() -> None:
    budget = RateBudget(settings(auth0_management_rate_per_second=0.5), None)
    await budget.acquire(Priority.READ, 1.0)  # the burst
    started = time.monotonic()
    with pytest.raises(BudgetSpent) as refused:
        await budget.acquire(Priority.READ, 0.5)  # the next token is 2 s away
    assert time.monotonic() - started < 0.1  # refused at once, not after waiting in vain
    assert refused.value.to_api_error().status == 503
    assert refused.value.to_api_error().headers["Retry-After"] == "2"


async def test_list_calls_wait_behind_waiting_reads() -> None:
    budget = RateBudget(settings(), None)  # 10/s, burst 1
    await budget.acquire(Priority.WRITE, 1.0)
    order: list[str] = []

    async def call(priority: Priority, name: str) -> None:
        await budget.acquire(priority, 3.0)
        order.append(name)

    lists = [asyncio.create_task(call(Priority.LIST, f"list{n}")) for n in range(3)]
    await asyncio.sleep(0.01)  # the lists wait first...
    reads = [asyncio.create_task(call(Priority.READ, f"read{n}")) for n in range(3)]
    await asyncio.gather(*lists, *reads)
    assert set(order[:3]) == {"read0", "read1", "read2"}, order


async def test_a_hold_stops_every_call_until_auth0s_reset() -> None:
    budget = RateBudget(settings(auth0_management_burst=5), None)
    await budget.hold(time.time() + 0.4)
    started = time.monotonic()
    await budget.acquire(Priority.READ, 2.0)
    assert time.monotonic() - started >= 0.35


class BudgetedOrigin:
    """Auth0 behind a budget with no token free: a caller that would wait gets one later."""

    def __init__(self) -> None:
        self.calls: list[bool] = []  # impatient?

    async def fetch(self, user_id: str) -> dict[str, Any] | None:
        impatient = rate_budget._impatient.get()
        self.calls.append(impatient)
        if impatient:
            raise BudgetSpent(1)
        await asyncio.sleep(0.05)  # waited for a token
        return {"user_id": user_id, "name": "New", "updated_at": "2026-02-01T00:00:00.000Z"}


async def test_a_stale_profile_answers_at_once_and_is_refreshed_in_the_background() -> None:
    origin = BudgetedOrigin()
    config = settings(profile_fresh_ttl_seconds=0.05, profile_stale_ttl_seconds=60)
    cache = ProfileCache(config, MemoryStore(100), origin.fetch)
    await cache.get(USER)  # a miss: no stale stand-in, so it waited for its token
    await asyncio.sleep(0.1)  # now stale

    started = time.monotonic()
    lookup = await cache.get(USER)
    assert lookup.outcome == "stale"
    assert time.monotonic() - started < 0.04  # did not wait for a token
    await asyncio.sleep(0.1)
    assert origin.calls == [False, True, False]  # the third: the background refresh
    refreshed = await cache.get(USER)  # fresh for 50 ms only: a hit, or stale once more
    assert refreshed.profile is not None
    assert refreshed.profile["name"] == "New"


# The shared bucket: pods are RateBudgets with their own Redis client, on one real Redis.


@pytest.fixture
def redis_alone() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def pods(server: RedisServer, count: int, **overrides: Any) -> AsyncIterator[list[Pod]]:
    config = settings(redis_url=server.url, **overrides)
    stores = [RedisStore.from_settings(config) for _ in range(count)]
    try:
        yield [Pod(RateBudget(config, store), store) for store in stores]
    finally:
        for store in stores:
            await store.close()


class Pod:
    def __init__(self, budget: RateBudget, store: RedisStore) -> None:
        self.budget = budget
        self.store = store

    async def waits_in_queue(self, priority: Priority, waiter: str) -> float:
        """One poll of a patient caller: registers it (no token free) and says when to come
        back, without coming back: a pod whose event loop is busy elsewhere."""
        wait, scope = await self.budget._take(priority, waiter, True)
        assert scope == "shared"
        return wait


async def test_a_late_waiter_keeps_its_place_from_every_pod(redis_alone: RedisServer) -> None:
    async with pods(redis_alone, 2) as (reader, lister):  # 10/s, burst 1
        await reader.budget.acquire(Priority.READ, 1.0)  # the burst
        assert await reader.waits_in_queue(Priority.READ, "late") > 0
        client, waiting = reader.store._client, reader.budget._keys[1]
        lease_ends = await client.zscore(waiting, "late")
        seconds, micros = await client.time()
        assert lease_ends is not None
        # The set outlives the lease.
        assert await client.pttl(waiting) >= lease_ends - (seconds * 1000 + micros // 1000)

        # The read's pod stalls for 0.6 s, longer than its poll (100 ms) and the jitter: the
        # list in the other pod still waits, and is refused when its own time is up.
        with pytest.raises(BudgetSpent):
            await lister.budget.acquire(Priority.LIST, 0.6)
        assert await reader.budget._take(Priority.READ, "late", True) == (0.0, "shared")


async def test_a_waiter_that_gives_up_leaves_the_queue_at_once(redis_alone: RedisServer) -> None:
    async with pods(redis_alone, 2, auth0_management_rate_per_second=2.0) as (reader, lister):
        await reader.budget.acquire(Priority.READ, 1.0)  # the burst; the next token in 0.5 s
        with pytest.raises(BudgetSpent):
            await reader.budget.acquire(Priority.READ, 0.2)  # queued, then gave up
        started = time.monotonic()
        await lister.budget.acquire(Priority.LIST, 2.0)
        # The next token (0.5 s), not the end of the refused read's lease (2.5 s).
        assert time.monotonic() - started < 1.2


async def test_lists_in_one_pod_wait_behind_reads_in_others(redis_alone: RedisServer) -> None:
    order: list[str] = []

    async def call(pod: Pod, priority: Priority, name: str) -> None:
        await pod.budget.acquire(priority, 4.0)
        order.append(name)

    async with pods(redis_alone, 3, auth0_management_rate_per_second=20.0) as (a, b, lister):
        with BudgetTrace(redis_alone.url) as trace:
            await a.budget.acquire(Priority.WRITE, 1.0)  # the burst: everyone after waits
            reads = [
                asyncio.create_task(call((a, b)[n % 2], Priority.READ, f"read{n}"))
                for n in range(12)
            ]
            await asyncio.sleep(0.02)  # the reads have asked
            lists = [asyncio.create_task(call(lister, Priority.LIST, f"list{n}")) for n in range(3)]
            await asyncio.gather(*reads, *lists)
        analysis = trace.analyse()

    assert all(name.startswith("read") for name in order[:12]), order
    summary = analysis.summary(Priority.LIST)
    assert summary["queued_behind_higher"] == 3, summary
    assert summary["overtakes"] == 0, summary
    assert summary["granted"] == 3, summary
    assert len(analysis.granted(Priority.READ)) == 12


async def test_the_trace_sees_an_overtake(redis_alone: RedisServer) -> None:
    """The measurement can fail: a read whose place vanished while it still waits, and a list
    granted meanwhile, is an overtake in Redis's own record of the calls."""
    async with pods(redis_alone, 2) as (reader, lister):
        with BudgetTrace(redis_alone.url) as trace:
            await reader.budget.acquire(Priority.READ, 1.0)
            await reader.waits_in_queue(Priority.READ, "robbed")
            await reader.store._client.zrem(reader.budget._keys[1], "robbed")
            await lister.budget.acquire(Priority.LIST, 1.0)
            await reader.budget.acquire(Priority.READ, 1.0)  # the read comes back, served
            await reader.budget._take(Priority.READ, "robbed", True)
        analysis = trace.analyse()
    overtakes = analysis.granted(Priority.LIST, "overtake")
    assert [grant.overtaken for grant in overtakes] == [("robbed",)]
