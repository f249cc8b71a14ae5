"""Reads requested in the same event-loop turn, sent as one call (the DataLoader pattern).

Under concurrency, requests that arrived together reach their Redis and database reads in the
same turn of the event loop. One MGET and one `WHERE user_id IN (...)` for all of them costs
the client, Redis, PgBouncer and PostgreSQL about what one read costs, where one call per
request would pay each of them per request. A lone request waits for nothing: its batch of
one is sent at the end of the turn it was asked in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Batcher(Generic[K, V]):
    """`load(key)` through `load_many(keys)`, which returns one value per key, in order.

    Keys asked for twice in one batch are read once. A read already sent is never joined:
    a caller that asks after a write committed must not get an answer read before it.
    """

    def __init__(
        self,
        load_many: Callable[[Sequence[K]], Awaitable[Sequence[V]]],
        max_batch: int = 100,
    ) -> None:
        self._load_many = load_many
        self._max_batch = max_batch
        self._pending: dict[K, asyncio.Future[V]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def load(self, key: K) -> V:
        future = self._pending.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            if not self._pending:
                loop.call_soon(self._dispatch)
            future = loop.create_future()
            self._pending[key] = future
            if len(self._pending) >= self._max_batch:
                self._dispatch()
        # Shielded: one caller hanging up must not cancel the read for the others.
        return await asyncio.shield(future)

    def _dispatch(self) -> None:
        if not self._pending:
            return  # already sent because it was full
        batch, self._pending = self._pending, {}
        # Its own task: the batch is read whatever happens to the request that opened it.
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[K, asyncio.Future[V]]) -> None:
        futures = list(batch.values())
        try:
            values = await self._load_many(list(batch))
            if len(values) != len(futures):
                raise RuntimeError(f"load_many returned {len(values)} values for {len(futures)}")
        except Exception as exc:
            for future in futures:
                if not future.done():
                    future.set_exception(exc)  # shield() retrieves it if the caller left
        else:
            for future, value in zip(futures, values, strict=True):
                if not future.done():
                    future.set_result(value)
        finally:
            for future in futures:
                if not future.done():
                    future.cancel()  # the read itself was cancelled (shutdown)
