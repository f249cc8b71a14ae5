"""Each process's own copy of profiles and account rows (adapters/local_cache.py), across
processes: two get-user processes read; update-user, delete-user and auth0-events, each its own
process, write; every reader's next read shows the write within 50 ms on loopback.

The bound is timed from the moment the writer's response arrived to the first read that shows
the write, polled every few milliseconds in each reader, and no read after that may show the
old state again. Every write must be seen within a second; the 50 ms bound must hold in one of
up to three writes: on shared CI cores a reader descheduled for 100 ms is the machine, not the
delivery (a fresh CI run measured 170 ms for both readers at once, beside the other worker's
image builds; the same test alone takes 3 to 30 ms).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from userapi.domain.users import user_path

from harness.emulator import EmulatorHandle, cloud_event
from harness.postgres import PostgresServer
from harness.redis_server import RedisServer
from harness.userapi import Service, migrate, service_env, start_service
from tests.support.api import API, EVENTS_SECRET

pytestmark = pytest.mark.integration

BOUND_SECONDS = 0.05  # the target of issue 23, on loopback
AFTER_SECONDS = 0.2  # how long a reader is watched for the old state coming back
TRIALS = 3  # writes, each timed, until one is within BOUND_SECONDS


@pytest.fixture(scope="module")
def second_reader(
    api: API, emulator: EmulatorHandle, redis_server: Any, database_url: str
) -> Iterator[Service]:
    """Another get-user process beside `api`'s, on the same Redis and PostgreSQL."""
    service = start_service("get-user", service_env(emulator, redis_server.url, database_url))
    yield service
    service.close()


def _readers(api: API, second_reader: Service) -> list[httpx.Client]:
    return [api.services["get-user"].http, second_reader.http]


def _mget_calls(redis_server: RedisServer) -> int:
    with redis.Redis.from_url(redis_server.url) as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


def _seen_within(
    readers: list[httpx.Client],
    path: str,
    token: str,
    shows_write: Callable[[httpx.Response], bool],
    written_at: float,
) -> list[float]:
    """For each reader, seconds from `written_at` to its first read showing the write; then
    AFTER_SECONDS of reads that must all show it. Each reader is polled by a thread of its own,
    so that one reader's delay never includes the time spent reading the other."""
    headers = {"Authorization": f"Bearer {token}"}

    def first_seen(reader: httpx.Client) -> float:
        while not shows_write(reader.get(path, headers=headers)):
            if time.monotonic() - written_at > 1:
                raise AssertionError(f"{reader.base_url} still shows the old state after 1 s")
            time.sleep(0.002)
        return time.monotonic() - written_at

    with ThreadPoolExecutor(max_workers=len(readers)) as pool:
        delays = list(pool.map(first_seen, readers))
    until = time.monotonic() + AFTER_SECONDS
    while time.monotonic() < until:
        for reader in readers:
            assert shows_write(reader.get(path, headers=headers)), "the old state came back"
    return delays


def _within_the_bound(trial: Callable[[int], list[float]]) -> None:
    """Runs `trial(n)` (a write, then each reader's delay until it shows it) until one trial's
    delays are all within BOUND_SECONDS, up to TRIALS times."""
    runs = []
    for n in range(TRIALS):
        runs.append(trial(n))
        if max(runs[-1]) <= BOUND_SECONDS:
            return
    raise AssertionError(f"no write was seen within {BOUND_SECONDS} s by every reader: {runs}")


def _warm(readers: list[httpx.Client], path: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    bodies = [reader.get(path, headers=headers) for reader in readers for _ in range(2)]
    assert {response.status_code for response in bodies} == {200}
    body: dict[str, Any] = bodies[-1].json()
    return body


def test_cached_reads_come_from_each_process_copy(
    api: API, second_reader: Service, user, admin, redis_server: RedisServer
) -> None:
    readers, path = _readers(api, second_reader), user_path(user["user_id"])
    _warm(readers, path, admin)
    before = _mget_calls(redis_server)
    headers = {"Authorization": f"Bearer {admin}"}
    for _ in range(20):
        for reader in readers:
            assert reader.get(path, headers=headers).status_code == 200
    # Both held the profile and the account row: not one of the 40 reads asked Redis (and
    # not one the database, which the next test shows).
    assert _mget_calls(redis_server) == before


def test_an_update_reaches_every_reader_within_the_bound(
    api: API, second_reader: Service, user, admin
) -> None:
    readers, path = _readers(api, second_reader), user_path(user["user_id"])
    assert _warm(readers, path, admin)["account"] is None
    # Not announced, so not seen: the copy really answers, for the account row too. (A change
    # made around userapi waits for LOCAL_CACHE_SECONDS; this one is overwritten below.)
    api.sql(
        "INSERT INTO accounts (user_id, plan, preferences, created_at, updated_at) "
        f"VALUES ('{user['user_id']}', 'by-hand', '{{}}', now(), now())"
    )
    assert _warm(readers, path, admin)["account"] is None

    def trial(n: int) -> list[float]:
        name, plan = f"Renamed {n}", f"pro-{n}"
        _warm(readers, path, admin)
        updated = api.call("update-user", "PATCH", path, admin, json={"name": name, "plan": plan})
        written_at = time.monotonic()
        assert updated.status_code == 200, updated.text

        def shows_write(response: httpx.Response) -> bool:
            body = response.json()
            return body["name"] == name and (body["account"] or {}).get("plan") == plan

        return _seen_within(readers, path, admin, shows_write, written_at)

    _within_the_bound(trial)


def test_a_deletion_reaches_every_reader_within_the_bound(
    api: API, second_reader: Service, user, admin, clean_emulator: EmulatorHandle
) -> None:
    readers = _readers(api, second_reader)

    def trial(n: int) -> list[float]:
        target = user if n == 0 else clean_emulator.create_user(f"d-{n}-{user['email']}")
        path = user_path(target["user_id"])
        _warm(readers, path, admin)
        deleted = api.call("delete-user", "DELETE", path, admin)
        written_at = time.monotonic()
        assert deleted.status_code == 204, deleted.text
        return _seen_within(
            readers, path, admin, lambda response: response.status_code == 404, written_at
        )

    _within_the_bound(trial)


def test_a_change_event_reaches_every_reader_within_the_bound(
    api: API, second_reader: Service, user, admin, clean_emulator: EmulatorHandle
) -> None:
    readers, path = _readers(api, second_reader), user_path(user["user_id"])

    def trial(n: int) -> list[float]:
        name = f"Changed In Dashboard {n}"
        _warm(readers, path, admin)
        changed = clean_emulator.update_user(user["user_id"], name=name)
        delivered = api.call(
            "auth0-events",
            "POST",
            "/events/auth0",
            json=cloud_event("user.updated", changed),
            headers={"Authorization": f"Bearer {EVENTS_SECRET}"},
        )
        written_at = time.monotonic()
        assert delivered.status_code == 200, delivered.text
        assert delivered.json()["applied"] == 1
        return _seen_within(
            readers, path, admin, lambda response: response.json()["name"] == name, written_at
        )

    _within_the_bound(trial)


@pytest.fixture
def lone_reader(
    clean_emulator: EmulatorHandle,
    redis_alone: RedisServer,
    database_url: str,
    postgres_server: PostgresServer,
) -> Iterator[Service]:
    migrate(database_url)
    service = start_service("get-user", service_env(clean_emulator, redis_alone.url, database_url))
    yield service
    service.close()


def test_with_redis_gone_reads_still_answer_promptly(
    lone_reader: Service, redis_alone: RedisServer, user, admin
) -> None:
    path = user_path(user["user_id"])
    for _ in range(3):
        assert lone_reader.get(path, admin).status_code == 200
    redis_alone.kill()
    for _ in range(5):
        started = time.monotonic()
        response = lone_reader.get(path, admin)
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 1.0
