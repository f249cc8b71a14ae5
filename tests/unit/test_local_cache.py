"""A process's own copy (adapters/local_cache.py), kept in step through a real Redis's channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from userapi.adapters.local_cache import MISSING, LocalCache
from userapi.adapters.shared_store import RedisStore, last_segment

from harness.redis_server import RedisServer
from tests.support.settings import make_settings

pytestmark = pytest.mark.anyio


def test_nothing_is_kept_or_served_while_not_listening() -> None:
    local = LocalCache(10, 60)
    local.put("k", 1, local.begin())
    assert local.get("k") is MISSING
    local.start()
    local.put("k", 1, local.begin())
    assert local.get("k") == 1
    local.stop()
    assert local.get("k") is MISSING
    local.start()
    assert local.get("k") is MISSING  # forgotten, not just hidden


def test_a_read_that_overlapped_a_drop_is_not_kept() -> None:
    local = LocalCache(10, 60)
    local.start()
    since = local.begin()
    local.drop("other")  # any announcement: the read may predate the write it announces
    local.put("k", "maybe old", since)
    assert local.get("k") is MISSING
    local.put("k", "read after", local.begin())
    assert local.get("k") == "read after"


def test_copies_age_out_and_are_bounded() -> None:
    local = LocalCache(2, 0.05)
    local.start()
    for key in ("a", "b", "c"):
        local.put(key, key, local.begin())
    assert [local.get(key) for key in ("a", "b", "c")] == [MISSING, "b", "c"]
    local.put("d", "d", local.begin(), seconds=10)  # never past the cache's own bound
    time.sleep(0.06)
    assert local.get("d") is MISSING
    local.put("e", "e", local.begin(), seconds=0)
    assert local.get("e") is MISSING


def test_a_unit_is_dropped_together() -> None:
    """update-user announces the new profile, commits the account row, then announces it: a
    get-user handled between the two must not pair the new profile with the old row's copy
    (a CI run did: the new name beside no account)."""
    local = LocalCache(10, 60, last_segment)
    local.start()
    profile, account = "userapi:profile:v3:auth0|a", "userapi:account:auth0|a"
    for key in (profile, account, "userapi:account:auth0|b"):
        local.put(key, key, local.begin())
    local.drop(profile)
    assert [local.get(profile), local.get(account)] == [MISSING, MISSING]
    assert local.get("userapi:account:auth0|b") == "userapi:account:auth0|b"
    local.drop("userapi:profile:v3:auth0|c")  # nothing held: nothing to drop
    local.put(account, "again", local.begin())
    assert local.get(account) == "again"


def test_a_unit_outlives_none_of_its_keys() -> None:
    """Evicted and aged-out keys leave their unit, so a unit never drops a key put later
    under another's name, and the bookkeeping stays as small as the copy."""
    local = LocalCache(2, 0.05, last_segment)
    local.start()
    for key in ("p:a", "q:a", "p:b"):  # the third evicts p:a
        local.put(key, key, local.begin())
    assert [local.get(k) for k in ("p:a", "q:a", "p:b")] == [MISSING, "q:a", "p:b"]
    assert local._units == {"a": {"q:a"}, "b": {"p:b"}}
    time.sleep(0.06)
    assert local.get("q:a") is MISSING
    assert local._units == {"b": {"p:b"}}
    local.drop("x:b")
    assert local._units == {}
    assert len(local) == 0


@pytest.fixture
def redis_alone() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


async def _until(condition: object, seconds: float) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.002)
    return time.monotonic() - started


async def test_another_process_announcement_drops_the_copy(redis_alone: RedisServer) -> None:
    settings = make_settings(redis_url=redis_alone.url)
    listening, writer = RedisStore.from_settings(settings), RedisStore.from_settings(settings)
    local = LocalCache(100, 60)
    try:
        listening.listen(local)
        await _until(lambda: local.active, 5)
        local.put("userapi:profile:v3:a", "old", local.begin())
        local.put("userapi:profile:v3:b", "kept", local.begin())
        assert await writer.set("userapi:profile:v3:a", b"new", 10, announce=True)
        seconds = await _until(lambda: local.get("userapi:profile:v3:a") is MISSING, 0.05)
        assert local.get("userapi:profile:v3:b") == "kept"
        assert await writer.get("userapi:profile:v3:a") == b"new"
        assert await writer.announce("userapi:account:b")
        local.put("userapi:account:b", "row", local.begin())
        await _until(lambda: local.get("userapi:account:b") is MISSING, 0.05)
        assert seconds < 0.05
        # A write without announce=True (credentials, locks) drops nothing.
        local.put("userapi:profile:v3:b", "kept", local.begin())
        await writer.set("userapi:profile:v3:b", b"x", 10)
        await asyncio.sleep(0.05)
        assert local.get("userapi:profile:v3:b") == "kept"
    finally:
        await listening.close()
        await writer.close()
    assert not local.active


async def test_a_lost_redis_turns_the_copy_off_until_listening_again(
    redis_alone: RedisServer,
) -> None:
    store = RedisStore.from_settings(make_settings(redis_url=redis_alone.url))
    local = LocalCache(100, 60)
    try:
        store.listen(local)
        await _until(lambda: local.active, 5)
        local.put("k", "v", local.begin())
        redis_alone.kill()
        await _until(lambda: not local.active, 1)
        assert local.get("k") is MISSING
        # Announcements sent while it was down were missed: it starts again empty.
        redis_alone.start()
        await _until(lambda: local.active, 5)
        assert local.get("k") is MISSING
    finally:
        await store.close()


async def test_a_silent_redis_turns_the_copy_off(redis_alone: RedisServer) -> None:
    """A Redis that stops answering without closing the connection (a black hole, a stall):
    the unanswered ping gives it away."""
    store = RedisStore.from_settings(make_settings(redis_url=redis_alone.url))
    local = LocalCache(100, 60)
    try:
        store.listen(local)
        await _until(lambda: local.active, 5)
        redis_alone.pause()
        try:
            await _until(lambda: not local.active, 3)
        finally:
            redis_alone.resume()
    finally:
        await store.close()


async def test_a_cancellation_taken_for_a_read_timeout_still_stops_the_listener(
    redis_alone: RedisServer,
) -> None:
    """On Python 3.11 a cancellation that lands as get_message's own timeout expires becomes
    that timeout, and redis-py answers "no message". The listener must stop all the same: a
    listener that went on after close() hung a CI run's test teardown for 30 minutes."""
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

    class SwallowingPubSub:
        swallow = True

        def __init__(self, pubsub: PubSub) -> None:
            self._pubsub = pubsub

        def __getattr__(self, name: str) -> Any:
            return getattr(self._pubsub, name)

        async def get_message(self, timeout: float) -> Any:
            try:
                return await self._pubsub.get_message(timeout=timeout)
            except asyncio.CancelledError:
                if not SwallowingPubSub.swallow:
                    raise
                return None  # what the race makes of it

    class SwallowingRedis(Redis):
        def pubsub(self, **kwargs: Any) -> Any:
            return SwallowingPubSub(super().pubsub(**kwargs))

    settings = make_settings(redis_url=redis_alone.url)
    store = RedisStore(
        RedisStore.from_settings(settings)._client,
        0.25,
        "userapi:test",
        lambda: SwallowingRedis.from_url(redis_alone.url),
    )
    local = LocalCache(100, 60)
    store.listen(local)
    await _until(lambda: local.active, 5)
    task = store._listening
    assert task is not None
    try:
        await store.close()
        await _until(task.done, 2)
    finally:
        # Without the fix the task would outlive the test and hang the runner's teardown:
        # fail instead.
        SwallowingPubSub.swallow = False
        task.cancel()
        await asyncio.wait([task], timeout=2)
    assert task.cancelled()
    assert not local.active
