"""Store keys built from ids a caller chooses, against a real redis-server: no id names another
id's entry or lock."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from userapi.adapters.shared_store import RedisStore, key_segment
from userapi.domain.profile_cache import ProfileCache
from userapi.domain.seen_events import SeenEvents
from userapi.platform.settings import Settings

from harness.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LOCK_SECONDS = 3.0


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        # Per test: nothing one test leaves in the session's Redis reaches another.
        redis_key_prefix=f"userapi-{secrets.token_hex(4)}:",
        profile_lock_seconds=LOCK_SECONDS,
        profile_ttl_jitter=0.0,
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_settings(settings)
    yield store
    await store.close()


def _auth0(existing: set[str]) -> Any:
    async def fetch(user_id: str) -> dict[str, Any] | None:
        return {"user_id": user_id, "name": "Victim"} if user_id in existing else None

    return fetch


async def test_an_id_ending_in_lock_cannot_hold_another_users_fill_lock(
    settings: Settings, store: RedisStore
) -> None:
    victim = "auth0|" + secrets.token_hex(12)
    cache = ProfileCache(settings, store, _auth0({victim}))
    # A read of the id `<victim>:lock` (no such user) leaves a negative entry under its key,
    # which was the victim's fill lock: each of the victim's misses then waited it out.
    assert (await cache.get(victim + ":lock")).profile is None
    started = time.monotonic()
    lookup = await cache.get(victim)
    assert (lookup.outcome, lookup.profile) == ("miss", {"user_id": victim, "name": "Victim"})
    assert time.monotonic() - started < LOCK_SECONDS / 2
    # And the other way round: the victim's lock is no entry of the id `<victim>:lock`.
    assert await store.try_lock(cache.lock_key(victim), 60) is not None
    assert (await cache.get(victim + ":lock")).outcome == "hit"


async def test_keys_stay_readable_and_encode_what_could_collide(
    settings: Settings, store: RedisStore
) -> None:
    prefix = settings.redis_key_prefix
    cache = ProfileCache(settings, store, _auth0(set()))
    assert cache.key("auth0|64f1c2a9") == f"{prefix}profile:v3:auth0|64f1c2a9"
    assert cache.key("auth0|x:lock") == f"{prefix}profile:v3:auth0|x%3Alock"
    assert cache.lock_key("auth0|x") == f"{prefix}profile:v3:auth0|x:lock"
    ids = ["a:b", "a%3Ab", "a%253Ab", "a/b", "a b", "é", "a\nb"]
    assert len({key_segment(i) for i in ids}) == len(ids)
    assert all(":" not in key_segment(i) for i in ids)


async def test_event_ids_are_remembered_apart(settings: Settings, store: RedisStore) -> None:
    events = SeenEvents(settings, store)
    assert await events.remember("evt:1%3A")
    assert await events.seen("evt:1%3A")
    assert not await events.seen("evt%3A1%3A")
    assert not await events.seen("evt:1:")
