"""Per-client quotas (issue 22): two get-user processes share one count per client in Redis.

Before quotas, one client could spend every other client's share of the cluster: nothing was
ever refused with 429.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis
from userapi.domain.users import user_path

from harness.emulator import EmulatorHandle
from harness.redis_server import RedisServer
from harness.userapi import Service, migrate, service_env, start_service

pytestmark = [pytest.mark.integration]

QUOTA, WINDOW = 5, 3


@pytest.fixture
def pods(
    clean_emulator: EmulatorHandle, redis_alone: RedisServer, database_url: str
) -> Iterator[list[Service]]:
    migrate(database_url)
    env = service_env(clean_emulator, redis_alone.url, database_url)
    env["CLIENT_QUOTA_REQUESTS"] = str(QUOTA)
    env["CLIENT_QUOTA_WINDOW_SECONDS"] = str(WINDOW)
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = list(pool.map(lambda _: start_service("get-user", env), range(2)))
    yield started
    for pod in started:
        pod.close()


def _wait_for_a_fresh_window() -> None:
    # Redis's clock and ours agree on this machine: start just after a window began, so that
    # the whole scenario falls in one window.
    left = WINDOW - time.time() % WINDOW
    if left < WINDOW - 0.3:
        time.sleep(left + 0.05)


def test_a_client_over_its_quota_is_refused_across_processes_and_others_are_not(
    pods: list[Service], clean_emulator: EmulatorHandle, user: dict[str, object]
) -> None:
    path = user_path(str(user["user_id"]))
    greedy = clean_emulator.token("greedy@clients", ["read:users"], claims={"azp": "app-greedy"})
    modest = clean_emulator.token("modest@clients", ["read:users"], claims={"azp": "app-modest"})
    assert pods[0].get(path, modest).status_code == 200  # a warm cache; 1 of modest's
    _wait_for_a_fresh_window()

    greedy_answers = [pods[n % 2].get(path, greedy) for n in range(QUOTA + 3)]
    modest_answers = [pods[n % 2].get(path, modest) for n in range(QUOTA - 2)]

    statuses = [r.status_code for r in greedy_answers]
    # Counted across both processes: alone, each would have allowed QUOTA.
    assert statuses == [200] * QUOTA + [429] * 3, statuses
    assert [r.status_code for r in modest_answers] == [200] * (QUOTA - 2)
    refused = greedy_answers[-1]
    assert refused.json()["error"] == "quota_exceeded"
    assert set(refused.json()) == {"error", "message", "request_id"}
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW
    assert refused.headers["RateLimit-Policy"] == f'"quota";q={QUOTA};w={WINDOW}'
    assert refused.headers["RateLimit"] == f'"quota";r=0;t={retry_after}'

    time.sleep(retry_after)  # honest: a retry after Retry-After is served
    assert pods[1].get(path, greedy).status_code == 200


def test_concurrent_requests_of_one_client_each_count(
    pods: list[Service], clean_emulator: EmulatorHandle, user: dict[str, object]
) -> None:
    """Checks of one event-loop turn share one Redis call: a client's requests in it must still
    each count, not merge into one. Near the limit each pod may let through one request the
    other had already counted (a share taken on the count it last heard, docs/architecture.md,
    "Per-client quotas"): merged counts would let through several times the quota."""
    path = user_path(str(user["user_id"]))
    token = clean_emulator.token("burst@clients", ["read:users"], claims={"azp": "app-burst"})
    assert pods[0].get(path, clean_emulator.token("w@clients", ["read:users"])).status_code == 200
    _wait_for_a_fresh_window()

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            answers = await asyncio.gather(
                *(
                    client.get(
                        pods[n % 2].base_url + path, headers={"Authorization": f"Bearer {token}"}
                    )
                    for n in range(4 * QUOTA)
                )
            )
            return [answer.status_code for answer in answers]

    statuses = asyncio.run(burst())
    assert QUOTA <= statuses.count(200) <= QUOTA + len(pods), statuses
    assert statuses.count(200) + statuses.count(429) == 4 * QUOTA, statuses


def test_hostile_client_ids_get_bounded_keys(
    pods: list[Service],
    clean_emulator: EmulatorHandle,
    user: dict[str, object],
    redis_alone: RedisServer,
) -> None:
    path = user_path(str(user["user_id"]))
    odd = [
        {"azp": "x" * 20000},
        {"azp": "a:b:quota:*\n\r\x00"},
        {"azp": "\u00e9\u2603\U0001f600"},
        {"azp": ["not", "a", "string"]},
        {"azp": ""},
        {},
    ]
    for n, claims in enumerate(odd):
        token = clean_emulator.token(f"odd{n}" + "y" * 3000, ["read:users"], claims=claims)
        assert pods[n % 2].get(path, token).status_code == 200
    keys = redis.Redis.from_url(redis_alone.url).keys("*quota:*")
    assert len(keys) == len(odd)  # each client its own counter, none sharing one
    assert max(len(key) for key in keys) < 120, keys


def test_the_contract_declares_the_429_and_the_503_with_their_headers() -> None:
    spec = json.loads((Path(__file__).parents[2] / "docs" / "openapi.json").read_text())
    operations = [
        operation
        for path in spec["paths"].values()
        for operation in path.values()
        if "504" in operation["responses"]  # the routes that call Auth0 for a caller
    ]
    assert len(operations) == 5
    for operation in operations:
        limited, budget = operation["responses"]["429"], operation["responses"]["503"]
        assert set(limited["headers"]) == {"Retry-After", "RateLimit-Policy", "RateLimit"}
        assert set(budget["headers"]) == {"Retry-After"}
