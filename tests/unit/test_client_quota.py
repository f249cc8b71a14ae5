"""The client quota's checks against one real Redis: the checks asked while one batch is on its
way go together in the next, and each request still counts. Across processes, with the HTTP
answers and their headers: tests/integration/test_client_quota.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest
from userapi.adapters.access_tokens import Principal
from userapi.adapters.client_quota import ClientQuota
from userapi.adapters.shared_store import RedisStore
from userapi.platform.errors import APIError

from harness.redis_server import RedisServer
from tests.support.settings import make_settings

pytestmark = pytest.mark.anyio

QUOTA = 5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_alone() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def client(name: str) -> Principal:
    return Principal(f"{name}@clients", frozenset(), {"azp": name})


async def test_checks_asked_meanwhile_share_the_next_round_trip(
    redis_alone: RedisServer,
) -> None:
    config = make_settings(
        redis_url=redis_alone.url, client_quota_requests=QUOTA, client_quota_window_seconds=60
    )
    store = RedisStore.from_settings(config)
    quota = ClientQuota(config, store)
    batches: list[int] = []
    count_many = quota._count_many

    async def counted(requests: Sequence[tuple[str, int]]) -> list[tuple[int, float] | None]:
        batches.append(len(requests))
        await asyncio.sleep(0.02)  # a slow round trip: the next checks arrive meanwhile
        return await count_many(requests)

    quota._counts._load_many = counted
    try:
        first = asyncio.ensure_future(quota.check("get-user", client("greedy")))
        await asyncio.sleep(0.005)  # on its way
        checks: list[asyncio.Future[None]] = []
        for name in ("greedy", "greedy", "greedy", "modest"):  # four turns, while it goes
            checks += [
                asyncio.ensure_future(quota.check("get-user", client(name))) for _ in range(QUOTA)
            ]
            await asyncio.sleep(0.002)
        results = await asyncio.gather(first, *checks, return_exceptions=True)
    finally:
        await store.close()

    assert batches == [1, 4 * QUOTA]  # one round trip for all that came while the first went
    greedy, modest = results[: 3 * QUOTA + 1], results[3 * QUOTA + 1 :]
    refused = [r for r in greedy if isinstance(r, APIError)]
    assert len(refused) == 2 * QUOTA + 1  # each request counted, none merged
    assert {r.status for r in refused} == {429}
    assert modest == [None] * QUOTA
