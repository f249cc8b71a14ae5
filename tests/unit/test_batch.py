"""The batcher behind the profile cache's and the account table's reads."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio
import pytest
from userapi.platform.batch import Batcher

pytestmark = pytest.mark.anyio


class Source:
    """load_many over a dict, recording each call's keys."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.delay = delay
        self.error: Exception | None = None

    async def load_many(self, keys: Sequence[str]) -> list[str | None]:
        self.calls.append(list(keys))
        await anyio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return [key.upper() if key != "missing" else None for key in keys]


async def gather(batcher: Batcher[str, str | None], keys: list[str]) -> list[str | None]:
    return list(await asyncio.gather(*(batcher.load(key) for key in keys)))


async def test_loads_in_one_turn_are_one_call_with_each_key_once() -> None:
    source = Source()
    batcher = Batcher(source.load_many)
    values = await gather(batcher, ["a", "b", "a", "missing", "c"])
    assert values == ["A", "B", "A", None, "C"]
    assert source.calls == [["a", "b", "missing", "c"]]


async def test_a_lone_load_is_sent_without_waiting_for_company() -> None:
    source = Source()
    batcher = Batcher(source.load_many)
    assert await batcher.load("a") == "A"
    assert await batcher.load("b") == "B"
    assert source.calls == [["a"], ["b"]]


async def test_a_full_batch_is_sent_at_once() -> None:
    source = Source()
    batcher = Batcher(source.load_many, max_batch=3)
    values = await gather(batcher, ["a", "b", "c", "d", "e"])
    assert values == ["A", "B", "C", "D", "E"]
    assert source.calls == [["a", "b", "c"], ["d", "e"]]


async def test_a_read_already_sent_is_not_joined() -> None:
    # A load asked for after a batch left must see writes that committed meanwhile.
    source = Source(delay=0.05)
    batcher = Batcher(source.load_many)
    first = asyncio.ensure_future(batcher.load("a"))
    await anyio.sleep(0.01)  # the first batch is on its way
    second = await batcher.load("a")
    assert (await first, second) == ("A", "A")
    assert source.calls == [["a"], ["a"]]


async def test_an_error_reaches_every_caller_of_the_batch() -> None:
    source = Source()
    source.error = ConnectionError("down")
    batcher = Batcher(source.load_many)
    results = await asyncio.gather(
        batcher.load("a"), batcher.load("b"), batcher.load("a"), return_exceptions=True
    )
    assert [type(result) for result in results] == [ConnectionError] * 3
    assert len(source.calls) == 1


async def test_a_caller_that_hangs_up_cancels_nothing_for_the_others() -> None:
    source = Source(delay=0.05)
    batcher = Batcher(source.load_many)
    leaver = asyncio.ensure_future(batcher.load("a"))
    stayer = asyncio.ensure_future(batcher.load("a"))
    await anyio.sleep(0.01)
    leaver.cancel()
    assert await stayer == "A"
    assert leaver.cancelled()


async def test_a_wrong_number_of_values_is_an_error_not_a_misdelivery() -> None:
    async def short(keys: Sequence[str]) -> list[str]:
        return ["only one"]

    batcher: Batcher[str, str] = Batcher(short)
    results = await asyncio.gather(batcher.load("a"), batcher.load("b"), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)
