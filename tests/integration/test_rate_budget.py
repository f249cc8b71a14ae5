"""One Auth0 rate budget for every pod (issue 22): several `userapi serve` processes, one real
Redis, and the emulator's rate limit set to the budget.

Before the budget each process spent Auth0's rate as if alone: a storm of misses met the
emulator's 429s, and a 429 seen by one process slowed no other.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from userapi.adapters.rate_budget import Priority
from userapi.domain.users import user_path

from harness.budget_trace import BudgetTrace
from harness.emulator import EmulatorHandle
from harness.redis_server import RedisServer
from harness.userapi import Service, migrate, service_env, start_service

pytestmark = [pytest.mark.integration]

GET_ROUTE = "GET /api/v2/users/{id}"
LIST_ROUTE = "GET /api/v2/users"
RATE, BURST = 2, 2  # Auth0's Free plan, the emulator's limit and the budget alike


def _start(endpoints: list[str], env: dict[str, str]) -> list[Service]:
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        return list(pool.map(lambda endpoint: start_service(endpoint, env), endpoints))


@pytest.fixture
def budget_env(
    clean_emulator: EmulatorHandle, redis_alone: RedisServer, database_url: str
) -> Iterator[dict[str, str]]:
    migrate(database_url)
    env = service_env(clean_emulator, redis_alone.url, database_url)
    env["AUTH0_MANAGEMENT_RATE_PER_SECOND"] = str(RATE)
    env["AUTH0_MANAGEMENT_BURST"] = str(BURST)
    yield env
    clean_emulator.rate_limit(1000, 1000.0)  # the emulator's default, for the tests after


def _users(emulator: EmulatorHandle, count: int) -> list[str]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        created = pool.map(
            lambda n: emulator.create_user(f"rb-{n}-{secrets.token_hex(3)}@example.com"),
            range(count),
        )
        return [str(user["user_id"]) for user in created]


def _warm(emulator: EmulatorHandle, services: list[Service], user: str) -> str:
    """A reader's token, after one read by each process: each fetches its Management token
    outside what the test then measures."""
    token = emulator.token("auth0|reader0000000000000000", ["read:users"])
    for service in services:
        assert service.get(user_path(user), token).status_code == 200
    return token


def _limit(emulator: EmulatorHandle) -> None:
    """Auth0 held to the budget's rate, from a full bucket; the shared bucket refills too."""
    emulator.rate_limit(BURST, RATE)
    emulator.reset()
    time.sleep(1.0)


def _messages(pods: list[Service]) -> list[str]:
    return [line.get("message", "") for pod in pods for line in pod.log_lines()]


async def _get(
    client: httpx.AsyncClient, url: str, token: str
) -> tuple[float, float, int, dict[str, str]]:
    started = time.time()
    response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
    return started, time.time(), response.status_code, dict(response.headers)


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(
        (sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times)),
        default=0,
    )


def test_a_miss_storm_across_processes_stays_within_the_budget(
    budget_env: dict[str, str], clean_emulator: EmulatorHandle, redis_alone: RedisServer
) -> None:
    """4 get-user and 1 list-users processes, 300 concurrent misses for distinct users; the
    order the budget granted tokens in is read from Redis itself (harness/budget_trace.py)."""
    emulator = clean_emulator
    *readers, lister = _start(["get-user"] * 4 + ["list-users"], budget_env)
    try:
        users = _users(emulator, 300)
        token = _warm(emulator, readers, users[0])
        _limit(emulator)

        async def storm() -> tuple[list[Any], list[Any], list[Any]]:
            limits = httpx.Limits(max_connections=400)
            async with httpx.AsyncClient(timeout=15, limits=limits) as client:
                reads = [
                    _get(client, readers[n % 4].base_url + user_path(user_id), token)
                    for n, user_id in enumerate(users[1:])
                ]
                tasks = [asyncio.ensure_future(read) for read in reads]
                # Every miss has asked for a token (most wait): now the lists arrive.
                since = time.monotonic()
                while trace.arrivals(Priority.READ) < len(reads):
                    assert time.monotonic() - since < 10, trace.arrivals(Priority.READ)
                    await asyncio.sleep(0.02)
                during = await asyncio.gather(
                    *(_get(client, lister.base_url + "/users?per_page=5", token) for _ in range(3))
                )
                done = await asyncio.gather(*tasks)
                after = [await _get(client, lister.base_url + "/users?per_page=5", token)]
                return done, list(during), after

        began = time.time()
        with BudgetTrace(redis_alone.url) as trace:
            reads, lists_during, lists_after = asyncio.run(storm())
        order = trace.analyse()
        calls = emulator.management_calls()
    finally:
        for service in [*readers, lister]:
            service.close()

    statuses = [status for _, _, status, _ in reads]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    refused = [headers for _, _, status, headers in reads if status == 503]
    assert all(int(headers["retry-after"]) >= 1 for headers in refused)
    served = statuses.count(200)
    assert served >= 2, served  # the budget was spent, not merely refused

    assert [status for _, _, status in calls if status == 429] == []
    arrivals = [at for at, _, _ in calls]
    assert _max_in_window(arrivals) <= RATE + BURST, sorted(a - began for a in arrivals)

    # list-users waited behind the misses: the lists asked while misses waited, and none got a
    # token while one did (in Redis's own order of the calls).
    lists = order.summary(Priority.LIST)
    assert lists["queued_behind_higher"] >= 3, lists  # the order was put to the test
    assert order.granted(Priority.LIST, "overtake") == [], lists
    assert {status for _, _, status, _ in lists_during} <= {200, 503}
    assert lists_after[0][2] == 200
    print(
        f"\n300 misses: {served} x 200, {len(refused)} x 503, {len(calls)} Auth0 calls in "
        f"{max(arrivals) - began:.1f} s, max {_max_in_window(arrivals)} in 1 s; list-users "
        f"during the storm: {[s for _, _, s, _ in lists_during]}; order {lists}; list calls "
        f"reaching Auth0: {len([c for c in calls if c[1] == LIST_ROUTE])}"
    )


def test_a_surprise_429_slows_every_process_until_the_reset(
    budget_env: dict[str, str], clean_emulator: EmulatorHandle
) -> None:
    emulator = clean_emulator
    # A budget that is no limit here, and time enough to wait for Auth0's reset.
    env = {
        **budget_env,
        "AUTH0_MANAGEMENT_RATE_PER_SECOND": "50",
        "AUTH0_MANAGEMENT_BURST": "50",
        "AUTH0_REQUEST_BUDGET_SECONDS": "5",
    }
    first, second = _start(["get-user", "get-user"], env)
    try:
        users = _users(emulator, 12)
        token = _warm(emulator, [first, second], users[0])
        reset = math.ceil(time.time()) + 2
        emulator.fault(GET_ROUTE, status=429, times=1, headers={"x-ratelimit-reset": str(reset)})
        with ThreadPoolExecutor(max_workers=1) as pool:
            limited = pool.submit(first.get, user_path(users[1]), token)
            time.sleep(0.3)  # the 429 has been seen by `first`
            # `second` never met the 429: its misses still wait for the reset.
            later = [second.get(user_path(user_id), token) for user_id in users[2:5]]
            assert limited.result().status_code == 200
        calls = emulator.management_calls()
    finally:
        first.close()
        second.close()

    assert [r.status_code for r in later] == [200, 200, 200]
    faulted = [at for at, route, status in calls if status == 429]
    assert len(faulted) == 1
    quiet = [at for at, _, _ in calls if faulted[0] + 0.05 < at < reset - 0.05]
    assert quiet == [], [at - faulted[0] for at in quiet]


def test_redis_down_each_process_spends_its_local_share(
    budget_env: dict[str, str], clean_emulator: EmulatorHandle, redis_alone: RedisServer
) -> None:
    emulator = clean_emulator
    # 4/s shared by 2 pods: 2/s each, a burst of 1, while Redis is down.
    env = {
        **budget_env,
        "AUTH0_MANAGEMENT_RATE_PER_SECOND": "4",
        "AUTH0_MANAGEMENT_BURST": "2",
        "AUTH0_MANAGEMENT_EXPECTED_PODS": "2",
    }
    pods = _start(["get-user", "get-user"], env)
    try:
        users = _users(emulator, 120)
        token = _warm(emulator, pods, users[0])
        redis_alone.kill()
        emulator.reset()

        async def storm(ids: list[str]) -> list[Any]:
            async with httpx.AsyncClient(timeout=15) as client:
                return await asyncio.gather(
                    *(
                        _get(client, pods[n % 2].base_url + user_path(user_id), token)
                        for n, user_id in enumerate(ids)
                    )
                )

        began = time.time()
        down = asyncio.run(storm(users[1:61]))
        span = time.time() - began
        down_calls = [c for c in emulator.management_calls() if c[1] == GET_ROUTE]
        redis_alone.start()
        time.sleep(1.2)  # REDIS_RETRY_AFTER_ERROR_SECONDS: the next call tries Redis again
        asyncio.run(storm(users[61:65]))
        logs = _messages(pods)
    finally:
        for pod in pods:
            pod.close()

    assert {status for _, _, status, _ in down} <= {200, 503}
    # Each pod: its burst of 1 plus 2/s, over the storm.
    allowed = 2 * (1 + 2 * span)
    assert 2 <= len(down_calls) <= allowed, (len(down_calls), span)
    assert [status for _, _, status in down_calls if status == 429] == []
    fallback = [m for m in logs if m.startswith("Redis unreachable: this pod spends")]
    assert len(fallback) == 2, fallback  # once per pod, not once per call
    assert sum(m.startswith("Redis answers again") for m in logs) >= 1
    print(
        f"\nRedis down: {len(down_calls)} Auth0 calls in {span:.1f} s from 2 processes "
        f"(allowed {allowed:.1f}); statuses {sorted({s for _, _, s, _ in down})}"
    )


def _felt(messages: list[str]) -> int:
    """Redis calls that failed (timed out), by the processes' log messages."""
    return sum(m.startswith("redis ") and "failed" in m for m in messages)


def test_a_slow_redis_is_not_a_down_one(
    budget_env: dict[str, str], clean_emulator: EmulatorHandle, redis_alone: RedisServer
) -> None:
    """Redis stalls for 0.6 s (over two of its 250 ms timeouts, under the second that
    means down), up to three times until a call has met it, in a miss storm on two pods that
    would each spend the whole rate on a local share (AUTH0_MANAGEMENT_EXPECTED_PODS 1). No pod
    falls back: the callers wait for the shared budget, and Auth0 sees no more than it allows.
    Falling back on the first timeout, as before, gave each pod a budget of its own."""
    emulator = clean_emulator
    pods = _start(["get-user", "get-user"], budget_env)
    try:
        users = _users(emulator, 41)
        token = _warm(emulator, pods, users[0])
        _limit(emulator)

        async def storm() -> list[Any]:
            async with httpx.AsyncClient(timeout=15) as client:
                reads = [
                    asyncio.ensure_future(
                        _get(client, pods[n % 2].base_url + user_path(user_id), token)
                    )
                    for n, user_id in enumerate(users[1:])
                ]
                # Once the burst is spent, the rest wait in Redis, polling as tokens come due:
                # a stall may fall between two polls, so it comes again (up to 3 times) until
                # a call has met it, with time between for Redis to answer again.
                until = time.monotonic() + 5
                while time.monotonic() < until:
                    if len(await asyncio.to_thread(emulator.management_calls)) >= BURST:
                        break
                    await asyncio.sleep(0.05)
                for _ in range(3):
                    redis_alone.pause(0.6)
                    await asyncio.sleep(1.8)
                    if _felt(_messages(pods)):
                        break
                return await asyncio.gather(*reads)

        began = time.time()
        answers = asyncio.run(storm())
        span = time.time() - began
        calls = [c for c in emulator.management_calls() if c[1] == GET_ROUTE]
        logs = _messages(pods)
    finally:
        redis_alone.resume()
        for pod in pods:
            pod.close()

    assert {status for _, _, status, _ in answers} <= {200, 503}
    assert [m for m in logs if m.startswith("Redis unreachable")] == []
    assert [status for _, _, status in calls if status == 429] == []
    allowed = BURST + RATE * span
    assert 2 <= len(calls) <= allowed, (len(calls), span)
    assert _max_in_window([at for at, _, _ in calls]) <= BURST + RATE, calls
    timeouts = sum(m.startswith("redis EVALSHA failed") for m in logs)
    felt = _felt(logs)
    assert felt > 0, "no call met a stall: the test proved nothing"
    print(
        f"\nRedis stalled 0.6 s: {len(calls)} Auth0 calls in {span:.1f} s from 2 processes "
        f"(allowed {allowed:.1f}), {felt} Redis calls failed ({timeouts} budget takes), statuses "
        f"{sorted({s for _, _, s, _ in answers})}"
    )


def test_with_the_budget_short_stale_profiles_answer_at_once_and_refresh_later(
    budget_env: dict[str, str], clean_emulator: EmulatorHandle
) -> None:
    emulator = clean_emulator
    # A burst that warms 10 profiles at once, then 2/s: too few tokens for 10 stale reads.
    env = {**budget_env, "AUTH0_MANAGEMENT_BURST": "10", "PROFILE_FRESH_TTL_SECONDS": "1"}
    (reader,) = _start(["get-user"], env)
    try:
        users = _users(emulator, 10)
        token = emulator.token("auth0|reader0000000000000000", ["read:users"])

        async def read_all() -> list[Any]:
            async with httpx.AsyncClient(timeout=15) as client:
                return await asyncio.gather(
                    *(_get(client, reader.base_url + user_path(u), token) for u in users)
                )

        assert {status for _, _, status, _ in asyncio.run(read_all())} == {200}
        time.sleep(1.2)  # every profile stale now; the bucket holds about 2 tokens
        emulator.reset()
        stale_reads = asyncio.run(read_all())
        outcomes = [line.get("cache") for line in reader.request_logs(at_least=20)][-10:]
        time.sleep(2.5)  # the background refreshes take their tokens as they come
        refreshed = len(emulator.management_calls())
    finally:
        reader.close()

    assert {status for _, _, status, _ in stale_reads} == {200}
    assert outcomes.count("stale") >= 5, outcomes
    slowest = max(end - start for start, end, _, _ in stale_reads)
    assert slowest < 0.5, slowest  # nobody waited for a token it would not get in time
    # More Auth0 calls than the reads that got a token: stale profiles were refreshed.
    fetched_for_callers = len(outcomes) - outcomes.count("stale")
    assert refreshed > fetched_for_callers, (refreshed, outcomes)
    print(
        f"\nbudget short: {outcomes.count('stale')} of 10 reads stale at once (slowest "
        f"{slowest * 1000:.0f} ms), {refreshed} Auth0 calls incl. background refreshes"
    )
