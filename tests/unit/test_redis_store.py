"""RedisStore against a real redis-server: when a failed call means Redis is gone (skip it for a
moment) and when it only means this process was slow to read the answer (don't)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from userapi.adapters.shared_store import BUSY, DOWN, RedisStore
from userapi.platform.settings import Settings

from harness.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

TIMEOUT = 0.2


async def _store(redis_server: RedisServer, timeout: float) -> RedisStore:
    settings = Settings(
        redis_url=redis_server.url,
        redis_timeout_seconds=timeout,
        redis_connect_timeout_seconds=timeout,
        redis_retry_after_error_seconds=30,
    )
    store = RedisStore.from_settings(settings)
    await store.set("userapi:test:key", b"value", 60)
    return store


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    store = await _store(redis_server, TIMEOUT)
    yield store
    await store.close()


def _blocked_call(store: RedisStore) -> asyncio.Task[object]:
    # BLPOP on an empty list holds only its own connection: the server keeps answering the
    # others, as it does when this process, not Redis, is what is slow.
    blpop = store._client.blpop(["userapi:test:empty"], timeout=1)
    return asyncio.create_task(store._call("blpop", blpop))


async def test_a_timeout_while_redis_answers_others_is_only_a_miss(store) -> None:
    blocked = _blocked_call(store)
    for _ in range(int(TIMEOUT / 0.02) + 5):  # others get answers while the BLPOP waits
        assert await store.get("userapi:test:key") == b"value"
        await asyncio.sleep(0.02)
    assert await blocked is BUSY
    assert await store.get("userapi:test:key") == b"value"


async def test_a_timeout_with_no_answers_meanwhile_skips_redis(store) -> None:
    assert await _blocked_call(store) is DOWN
    assert await store.get("userapi:test:key") is None  # skipped: not even asked


async def test_more_concurrent_calls_than_connections_wait_instead_of_failing(
    redis_server: RedisServer,
) -> None:
    # A generous timeout: what is tested is that call 65 waits for a connection, where
    # redis-py's default pool raises "Too many connections" at once, whatever the timeout.
    store = await _store(redis_server, timeout=3.0)
    try:
        values = await asyncio.gather(*(store.get("userapi:test:key") for _ in range(300)))
    finally:
        await store.close()
    assert values == [b"value"] * 300


async def test_get_many_answers_each_key_in_order(
    store: RedisStore, redis_server: RedisServer
) -> None:
    await store.set("userapi:test:other", b"other", 60)
    keys = ["userapi:test:other", "userapi:test:absent", "userapi:test:key"]
    assert await store.get_many(keys) == [b"other", None, b"value"]


async def test_get_many_reads_all_misses_while_redis_is_skipped(store: RedisStore) -> None:
    assert await _blocked_call(store) is DOWN
    assert await store.get_many(["userapi:test:key", "userapi:test:absent"]) == [None, None]


async def test_writes_say_whether_they_happened(
    store: RedisStore, redis_server: RedisServer
) -> None:
    assert await store.set("userapi:test:written", b"x", 60) is True
    assert await store.delete("userapi:test:written") is True
    redis_server.kill()
    assert await store.delete("userapi:test:key") is False  # tried even though Redis is dead
    assert await store.set("userapi:test:written", b"x", 60) is False  # skipped after that


async def test_a_connection_that_died_with_a_restarted_redis_is_retried_on_a_new_one(
    store: RedisStore, redis_server: RedisServer
) -> None:
    """A restart on the same address (a managed Redis failing over): the pooled connection
    fails, the server answers a new one at once. Not an error, not a reason to skip Redis."""
    assert await store.get("userapi:test:key") == b"value"  # a pooled connection to it
    redis_server.kill()
    redis_server.start()
    assert await store.set("userapi:test:after", b"x", 60) is True
    assert await store.get("userapi:test:after") == b"x"


async def test_after_skipping_one_call_probes_while_the_others_keep_skipping(
    redis_server: RedisServer,
) -> None:
    settings = Settings(
        redis_url=redis_server.url,
        redis_timeout_seconds=TIMEOUT,
        redis_retry_after_error_seconds=0.1,
    )
    store = RedisStore.from_settings(settings)
    try:
        assert await _blocked_call(store) is DOWN
        assert await store.get("userapi:test:key") is None  # skipped
        await asyncio.sleep(0.15)
        assert store._available()  # this call probes,
        assert not store._available()  # the others skip until it has answered
        await store._call("ping", store._client.ping())  # it answers
        assert await store.set("userapi:test:probed", b"x", 60) is True  # nobody skips now
    finally:
        await store.close()


class _LosesFirstLockAnswer(RedisStore):
    """The first SET NX reaches Redis, but its answer is lost while Redis answers others."""

    lost = False

    async def _call(self, operation, command):
        result = await super()._call(operation, command)
        if operation == "SET NX" and not self.lost:
            self.lost = True
            return BUSY
        return result


async def test_a_lock_whose_answer_was_lost_is_recognised_as_ours_on_the_next_try(
    redis_server: RedisServer,
) -> None:
    settings = Settings(redis_url=redis_server.url, redis_timeout_seconds=TIMEOUT)
    store = _LosesFirstLockAnswer.from_settings(settings)
    key = "userapi:test:lock:" + secrets.token_hex(4)
    try:
        assert await store.try_lock(key, 30) is None  # unsure: it may be ours
        token = await store.try_lock(key, 30)  # the next poll: it is
        assert token is not None
        assert await store.try_lock(key, 30) is None  # and nobody else gets it meanwhile
        await store.unlock(key, token)
        assert await store.try_lock(key, 30) is not None
    finally:
        await store.close()
