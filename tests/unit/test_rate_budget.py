"""The Auth0 rate budget in one process (no Redis: the local bucket), and the profile cache's
stale answers when the budget has no token. The shared bucket is tested across processes with
real Redis in tests/integration/test_rate_budget.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from userapi.adapters import rate_budget
from userapi.adapters.rate_budget import BudgetSpent, Priority, RateBudget
from userapi.adapters.shared_store import MemoryStore
from userapi.domain.profile_cache import ProfileCache
from userapi.platform.settings import Settings

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
