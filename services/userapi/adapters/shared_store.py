"""The store every pod shares: Redis when REDIS_URL is set, else an in-process LRU.

Both back the profile cache and the Management API token. It is a cache, so it never fails a
request: every Redis error reads as a miss, a write that did not happen, or a lock not taken.
Writes say whether they happened, for the one caller that must know (auth0-events).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote

from userapi.platform import telemetry

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from userapi.adapters.local_cache import LocalCache
    from userapi.platform.settings import Settings

log = logging.getLogger("userapi.store")

# Kept as they are in a key segment, so keys stay readable (`auth0|64f1…`); ':' and '%' are
# not among them.
_SEGMENT_SAFE = "|@+=!$&'()*,;"


@functools.lru_cache(maxsize=4096)  # the cached read's keys: the same few ids, every request
def key_segment(value: str) -> str:
    """`value` (a user id, an event id: what a caller chose) as one segment of a store key.

    Percent-encoded, so the segment never holds the ':' that separates segments and two values
    never share an encoding: an id `X:lock` cannot name the key of user X's fill lock.
    """
    return quote(value, safe=_SEGMENT_SAFE)


def last_segment(key: str) -> str:
    """A key's last segment: the user id's in a profile's or an account row's key, the unit whose
    copies one process drops together (adapters/local_cache.py)."""
    return key.rpartition(":")[2]


class SharedStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One value (or None) per key, in order, in one round trip."""
        ...

    async def set(self, key: str, value: bytes, ttl_seconds: float, announce: bool = False) -> bool:
        """True when the store now holds the value; False when the write failed. `announce`:
        every process's own copy of `key` (adapters/local_cache.py) is dropped with the write."""
        ...

    async def delete(self, key: str, announce: bool = False) -> bool:
        """True when the store no longer holds the key; False when the delete failed."""
        ...

    async def announce(self, key: str) -> bool:
        """Tells every process that `key` (in the store or not: an account row) changed."""
        ...

    async def try_lock(self, key: str, ttl_seconds: float) -> str | None:
        """A token when this caller now holds the lock, None when someone else does."""
        ...

    async def unlock(self, key: str, token: str) -> None: ...

    async def close(self) -> None: ...


T = TypeVar("T")


async def fill_once(
    store: SharedStore,
    lock_key: str,
    *,
    lock_seconds: float,
    wait_seconds: float,
    poll_seconds: float,
    read: Callable[[], Awaitable[T | None]],
    fill: Callable[[], Awaitable[T]],
) -> T:
    """Single-flight across processes: whoever holds `lock_key` runs `fill`, which leaves its
    result where `read` finds it; the others poll `read` for up to `wait_seconds`, then fill
    themselves (a crashed holder costs a delay, not an outage).

    Each poll also tries the lock again: a lock that vanished without a result (its holder
    failed, Redis restarted empty) or a try_lock whose answer was lost is then taken at once,
    instead of waited out. Under the lock, `read` is tried once more first: the previous holder
    may have filled it between our read and our lock, and filling again would be the duplicate
    the lock exists to prevent.
    """
    lock = await store.try_lock(lock_key, lock_seconds)
    deadline = time.monotonic() + wait_seconds
    while lock is None and time.monotonic() < deadline:
        await asyncio.sleep(poll_seconds)
        found = await read()
        if found is not None:
            return found
        lock = await store.try_lock(lock_key, lock_seconds)
    try:
        if lock is not None:
            found = await read()
            if found is not None:
                return found
        return await fill()
    finally:
        if lock is not None:
            await store.unlock(lock_key, lock)


class MemoryStore:
    """Redis semantics within one process, locks included (SET NX PX)."""

    def __init__(self, max_entries: int) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries

    async def get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl_seconds: float, announce: bool = False) -> bool:
        # One process: nobody else keeps a copy to drop.
        self._entries[key] = (time.monotonic() + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return True

    async def delete(self, key: str, announce: bool = False) -> bool:
        self._entries.pop(key, None)
        return True

    async def announce(self, key: str) -> bool:
        return True

    async def try_lock(self, key: str, ttl_seconds: float) -> str | None:
        if await self.get(key) is not None:
            return None
        token = secrets.token_hex(8)
        await self.set(key, token.encode(), ttl_seconds)
        return token

    async def unlock(self, key: str, token: str) -> None:
        if await self.get(key) == token.encode():
            await self.delete(key)

    async def close(self) -> None:
        self._entries.clear()


# Delete the lock only if we still own it: it may have expired and been taken by another pod.
_UNLOCK = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class _Failed(enum.Enum):
    DOWN = "down"  # Redis answered nobody while this call waited
    BUSY = "busy"  # Redis answered other calls meanwhile: this process was slow, not Redis


DOWN, BUSY = _Failed.DOWN, _Failed.BUSY


_MAX_UNSURE_LOCKS = 1000


# How often the listening connection is checked when no announcement comes: a ping unanswered
# for as long means Redis is gone (a black hole sends no reset), and the copy is dropped.
_LISTEN_PING_SECONDS = 1.0


class RedisStore:
    def __init__(
        self,
        client: Redis,
        retry_after_error_seconds: float,
        channel: str = "userapi:invalidate",
        listener: Callable[[], Redis] | None = None,
    ) -> None:
        self._client = client
        self._retry_after_error = retry_after_error_seconds
        # Where writers announce the keys they changed, and every process listens
        # (adapters/local_cache.py).
        self.channel = channel
        # A client of its own for listening: no command timeout (it waits for announcements)
        # and no silent reconnect, which would hide the announcements sent meanwhile.
        self._listener_client = listener
        self._listening: asyncio.Task[None] | None = None
        # A dead or black-holed Redis would cost a timeout per call; after an error we skip
        # Redis for a moment so requests stay fast instead of each paying the timeout. Then one
        # call tries it (the others keep skipping until it answers): a Redis that is back is
        # used again within REDIS_RETRY_AFTER_ERROR_SECONDS, and one that is not costs one
        # call per interval, never a burst of timeouts.
        self._skip_until = 0.0
        # When Redis last answered anyone in this process. A call that failed while others were
        # being answered met a busy event loop or a full pool, not a dead Redis: skipping Redis
        # then would turn a second of load into a second of Auth0 calls.
        self._last_reply = float("-inf")
        # When the first call that went unanswered was sent, while no call has been answered
        # since: how long Redis has been silent to this process (failing_for).
        self._failing_since: float | None = None
        # Lock tokens whose SET NX went unanswered while Redis answered others: the SET may
        # have happened, so the next try for the key sends the same token and can recognise
        # a lock that is its own (bounded: a key that is never tried again must not pile up).
        self._unsure_locks: OrderedDict[str, str] = OrderedDict()
        self._scripts: dict[str, AsyncScript] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        with telemetry.sdk_hidden():
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import ConnectionError as RedisConnectionError

        assert settings.redis_url is not None
        # Blocking: with more concurrent requests than connections, a request waits (within
        # the command timeout) for one to free up, where the default pool would fail at once.
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=64,
            timeout=settings.redis_timeout_seconds,
            socket_timeout=settings.redis_timeout_seconds,
            socket_connect_timeout=settings.redis_connect_timeout_seconds,
            # redis-py's defaults (5 s timeouts, retries with backoff) would stall a request for
            # a minute on a black-holed Redis: a cache must fail fast instead. A timeout is
            # never retried. A connection that died (reset, closed: a Redis restarted on the
            # same address, a managed Redis failing over) is retried once at once, on a new
            # connection: the pool still holds connections to the old server, and their errors
            # say nothing about the new one. A Redis that is really down refuses that second
            # connection too, in about a millisecond.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            retry_on_timeout=False,
        )
        url, connect_timeout = settings.redis_url, settings.redis_connect_timeout_seconds

        def listener() -> Redis:
            return Redis.from_url(
                url,
                socket_connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
            )

        return cls(
            Redis.from_pool(pool),
            settings.redis_retry_after_error_seconds,
            f"{settings.redis_key_prefix}invalidate",
            listener,
        )

    def _available(self) -> bool:
        now = time.monotonic()
        if now < self._skip_until:
            return False
        if self._skip_until:
            # Skipping ended: this call probes, the others skip until it has answered.
            self._skip_until = now + self._retry_after_error
        return True

    async def _call(self, operation: str, command: Awaitable[T]) -> T | _Failed:
        sent = time.monotonic()
        try:
            with telemetry.operation("redis", operation):
                result = await command
        except Exception as exc:
            answering_others = self._last_reply > sent
            if not answering_others:
                self._skip_until = time.monotonic() + self._retry_after_error
                if self._failing_since is None:
                    self._failing_since = sent
            log.warning(
                "redis %s failed, treating as a miss",
                operation,
                extra={"error": repr(exc), "redis_answering_others": answering_others},
            )
            return BUSY if answering_others else DOWN
        self._last_reply = time.monotonic()
        self._skip_until = 0.0
        self._failing_since = None
        return result

    def failing_for(self) -> float:
        """Seconds since Redis last left a call of this process unanswered with none answered
        since: 0 while it answers. A moment of it is a slow Redis or a busy process; a second
        of it is a Redis that is down."""
        if self._failing_since is None:
            return 0.0
        return time.monotonic() - self._failing_since

    async def get(self, key: str) -> bytes | None:
        if not self._available():
            return None
        value = await self._call("GET", self._client.get(key))
        return value if isinstance(value, bytes) else None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        # One MGET, so every key must live on one node: REDIS_URL names a single Redis (or a
        # primary behind a proxy), not a Redis Cluster.
        if not self._available():
            return [None] * len(keys)
        values = await self._call("MGET", self._client.mget(keys))
        if isinstance(values, _Failed):
            return [None] * len(keys)
        return [value if isinstance(value, bytes) else None for value in values]

    async def set(self, key: str, value: bytes, ttl_seconds: float, announce: bool = False) -> bool:
        if not self._available():
            return False
        milliseconds = max(1, int(ttl_seconds * 1000))
        if not announce:
            command = self._client.set(key, value, px=milliseconds)
            return not isinstance(await self._call("SET", command), _Failed)
        # MULTI/EXEC: the write and its announcement happen together or not at all, in one
        # round trip.
        pipeline = self._client.pipeline(transaction=True)
        pipeline.set(key, value, px=milliseconds)
        pipeline.publish(self.channel, key)
        return not isinstance(await self._call("SET PUBLISH", pipeline.execute()), _Failed)

    async def delete(self, key: str, announce: bool = False) -> bool:
        # Invalidation is the one write worth trying even right after an error.
        if not announce:
            return not isinstance(await self._call("DEL", self._client.delete(key)), _Failed)
        pipeline = self._client.pipeline(transaction=True)
        pipeline.delete(key)
        pipeline.publish(self.channel, key)
        return not isinstance(await self._call("DEL PUBLISH", pipeline.execute()), _Failed)

    async def announce(self, key: str) -> bool:
        # Tried even right after an error, as a delete is: a missed one leaves a stale copy.
        return not isinstance(
            await self._call("PUBLISH", self._client.publish(self.channel, key)), _Failed
        )

    def listen(self, local: LocalCache) -> None:
        """Keeps `local` in step with the announcements, from a task started on first call:
        `local` serves only while it listens, and is emptied whenever it may have missed one."""
        if self._listening is None and self._listener_client is not None:
            self._listening = asyncio.get_running_loop().create_task(self._listen(local))

    async def _listen(self, local: LocalCache) -> None:
        task = asyncio.current_task()
        while self._listening is not None:
            try:
                await self._listen_once(local)
            except asyncio.CancelledError:
                local.stop()
                raise
            except Exception as exc:
                if task is not None and task.cancelling():
                    # The client library turned our cancellation into an error of its own.
                    local.stop()
                    raise asyncio.CancelledError from exc
                if local.active:
                    log.warning(
                        "stopped listening to Redis; the process's own copy is off",
                        extra={"error": repr(exc)},
                    )
            local.stop()
            await asyncio.sleep(max(self._retry_after_error, 0.05))

    async def _listen_once(self, local: LocalCache) -> None:
        assert self._listener_client is not None
        client = self._listener_client()
        pubsub = client.pubsub()
        task = asyncio.current_task()
        try:
            await pubsub.subscribe(self.channel)
            awaiting_pong = False
            while True:
                message = await pubsub.get_message(timeout=_LISTEN_PING_SECONDS)
                if task is not None and task.cancelling():
                    # A cancellation that lands as get_message's own timeout expires is taken
                    # for that timeout (Python 3.11's asyncio.timeout), and redis-py answers
                    # "no message": the task listened on after close(), and a test runner's
                    # teardown waited for it forever (a CI run hung 30 min on it).
                    raise asyncio.CancelledError
                if message is None:
                    if awaiting_pong:
                        raise TimeoutError("Redis did not answer a ping in time")
                    awaiting_pong = True
                    await pubsub.ping()
                    continue
                awaiting_pong = False  # anything heard (the pong too) proves the connection
                kind = message["type"]
                if kind == "message":
                    data = message["data"]
                    local.drop(data.decode() if isinstance(data, bytes) else str(data))
                elif kind == "subscribe":
                    # Announcements reach this process from here on.
                    local.start()
        finally:
            local.stop()
            try:
                await pubsub.aclose()
                await client.aclose()
            except Exception as exc:
                log.debug("closing the listener failed", extra={"error": repr(exc)})

    async def try_lock(self, key: str, ttl_seconds: float) -> str | None:
        unsure = self._unsure_locks.pop(key, None)
        token = unsure or secrets.token_hex(8)
        if not self._available():
            return token  # nobody can coordinate through a dead Redis: proceed alone
        milliseconds = int(ttl_seconds * 1000)
        acquired = await self._call(
            "SET NX", self._client.set(key, token, nx=True, px=milliseconds)
        )
        if acquired is DOWN or acquired is True:
            return token
        if acquired is BUSY:
            # The SET may or may not have happened. Waiting for the value as if another pod
            # held the lock keeps the one-fetch-per-key promise; the next try (fill_once polls)
            # finds out whether the lock is this token's.
            self._unsure_locks[key] = token
            while len(self._unsure_locks) > _MAX_UNSURE_LOCKS:
                self._unsure_locks.popitem(last=False)
            return None
        if unsure is not None:
            holder = await self._call("GET", self._client.get(key))
            if holder == token.encode():
                return token  # the earlier, unanswered SET did happen: the lock is ours
        return None

    async def unlock(self, key: str, token: str) -> None:
        if self._available():
            await self._call("EVAL", self._client.eval(_UNLOCK, 1, key, token))

    async def run_script(
        self, source: str, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> Any:
        """A Lua script's answer (EVALSHA, loaded on first use), or None when Redis failed or
        is being skipped: the caller decides what to do without Redis, as with every call."""
        if not self._available():
            return None
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        result = await self._call("EVALSHA", script(keys=list(keys), args=list(args)))
        return None if isinstance(result, _Failed) else result

    async def close(self) -> None:
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.cancel()
            # Bounded: closing must not hang on a Redis that stopped answering.
            await asyncio.wait([listening], timeout=1.0)
        try:
            await self._client.aclose()
        except Exception as exc:
            log.warning("redis close failed", extra={"error": repr(exc)})


def create_store(settings: Settings) -> SharedStore:
    if settings.redis_url:
        return RedisStore.from_settings(settings)
    return MemoryStore(settings.memory_cache_max_entries)
