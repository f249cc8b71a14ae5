"""Profile cache semantics, on the in-process store (Redis gets the same tests in integration)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from userapi.adapters.shared_store import MemoryStore
from userapi.domain.profile_cache import PROFILE_FIELDS, ProfileCache, allowlisted
from userapi.platform.errors import Auth0Error, Auth0Timeout

from tests.support.settings import make_settings

pytestmark = pytest.mark.anyio

USER = "auth0|64f1c2a9e4b0a1b2c3d4e5f6"
PROFILE = {
    "user_id": USER,
    "email": "ada@example.com",
    "name": "Ada",
    "updated_at": "2026-01-01T00:00:00.000Z",
    "identities": [{"provider": "auth0", "access_token": "secret"}],
    "app_metadata": {"role": "admin"},
    "logins_count": 3,
}


class Origin:
    """Stands in for Auth0 as the cache sees it: a fetch function that counts calls."""

    def __init__(self, profile: dict[str, Any] | None = PROFILE, delay: float = 0.0) -> None:
        self.profile = profile
        self.delay = delay
        self.calls = 0
        self.error: Auth0Error | None = None

    async def fetch(self, user_id: str) -> dict[str, Any] | None:
        self.calls += 1
        profile = self.profile  # as it was when asked
        await anyio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return dict(profile) if profile is not None else None


def make_cache(origin: Origin, **overrides: Any) -> ProfileCache:
    return ProfileCache(make_settings(**overrides), MemoryStore(100), origin.fetch)


async def test_second_read_is_a_hit_without_calling_auth0() -> None:
    origin = Origin()
    cache = make_cache(origin)
    first = await cache.get(USER)
    second = await cache.get(USER)
    assert (first.outcome, second.outcome) == ("miss", "hit")
    assert origin.calls == 1
    assert second.profile == first.profile


async def test_only_allowlisted_fields_are_kept() -> None:
    lookup = await make_cache(Origin()).get(USER)
    assert lookup.profile == {
        "user_id": USER,
        "email": "ada@example.com",
        "name": "Ada",
        "updated_at": "2026-01-01T00:00:00.000Z",
    }


async def test_app_metadata_is_kept_only_when_configured() -> None:
    lookup = await make_cache(Origin(), profile_include_app_metadata=True).get(USER)
    assert lookup.profile is not None
    assert lookup.profile["app_metadata"] == {"role": "admin"}
    assert "identities" not in lookup.profile


async def test_put_answers_with_what_a_caller_may_show_stored_or_not() -> None:
    cache = make_cache(Origin(), profile_include_app_metadata=True)
    newer = {**NEWER, "app_metadata": {"role": "admin"}, "identities": [{"provider": "auth0"}]}
    stored = await cache.put(newer)
    assert stored.outcome == "stored"
    assert stored.visible.profile == (await cache.get(USER)).profile
    assert "identities" not in stored.visible.profile
    # An older profile is not stored, and what the caller may show of it is cut alike.
    older = await cache.put({**PROFILE, "identities": [{"provider": "auth0"}]})
    assert older.outcome == "older"
    assert set(older.visible.profile) <= {*PROFILE_FIELDS, "app_metadata"}


def test_the_fields_a_cache_asks_auth0_for_are_the_ones_it_keeps() -> None:
    assert make_cache(Origin()).fields == ",".join(PROFILE_FIELDS)
    keeping = make_cache(Origin(), profile_include_app_metadata=True)
    assert keeping.fields == ",".join([*PROFILE_FIELDS, "app_metadata"])


async def test_pods_keeping_app_metadata_and_pods_not_keeping_it_never_share_entries() -> None:
    store, origin = MemoryStore(100), Origin()
    keeping = ProfileCache(make_settings(profile_include_app_metadata=True), store, origin.fetch)
    not_keeping = ProfileCache(make_settings(), store, origin.fetch)
    assert (await keeping.get(USER)).profile["app_metadata"]  # type: ignore[index]
    lookup = await not_keeping.get(USER)  # after the setting is turned off, say
    assert lookup.profile is not None
    assert "app_metadata" not in lookup.profile
    assert lookup.outcome == "miss"


async def test_concurrent_misses_make_one_auth0_call() -> None:
    origin = Origin(delay=0.05)
    cache = make_cache(origin)
    outcomes: list[str] = []

    async def read() -> None:
        outcomes.append((await cache.get(USER)).outcome)

    async with anyio.create_task_group() as group:
        for _ in range(100):
            group.start_soon(read)
    assert origin.calls == 1
    assert sorted(set(outcomes)) == ["coalesced", "miss"]
    assert outcomes.count("miss") == 1


async def test_unknown_users_are_remembered_briefly() -> None:
    origin = Origin(profile=None)
    cache = make_cache(origin, profile_negative_ttl_seconds=0.2)
    assert (await cache.get(USER)).profile is None
    assert (await cache.get(USER)).outcome == "hit"
    assert origin.calls == 1
    await anyio.sleep(0.25)
    await cache.get(USER)
    assert origin.calls == 2


async def test_expired_entries_are_refetched() -> None:
    origin = Origin()
    cache = make_cache(origin, profile_fresh_ttl_seconds=0.1)
    await cache.get(USER)
    await anyio.sleep(0.15)
    assert (await cache.get(USER)).outcome == "miss"
    assert origin.calls == 2


async def test_a_stale_profile_stands_in_when_auth0_fails() -> None:
    origin = Origin()
    cache = make_cache(origin, profile_fresh_ttl_seconds=0.05, profile_stale_ttl_seconds=60)
    fetched = await cache.get(USER)
    await anyio.sleep(0.1)
    origin.error = Auth0Timeout("down")
    lookup = await cache.get(USER)
    assert lookup.outcome == "stale"
    assert lookup.profile == fetched.profile
    assert lookup.fetched_at == fetched.fetched_at
    assert lookup.fetched_at < time.time() - 0.05


async def test_without_a_stale_profile_the_auth0_error_propagates() -> None:
    origin = Origin()
    origin.error = Auth0Timeout("down")
    with pytest.raises(Auth0Timeout):
        await make_cache(origin).get(USER)


async def test_a_stale_negative_entry_does_not_stand_in() -> None:
    origin = Origin(profile=None)
    cache = make_cache(origin, profile_negative_ttl_seconds=0.05)
    await cache.get(USER)
    await anyio.sleep(0.1)
    origin.error = Auth0Error("down")
    with pytest.raises(Auth0Error):
        await cache.get(USER)


async def test_invalidate_forces_the_next_read_to_auth0() -> None:
    origin = Origin()
    cache = make_cache(origin)
    await cache.get(USER)
    await cache.invalidate(USER)
    assert (await cache.get(USER)).outcome == "miss"
    assert origin.calls == 2


async def test_a_cancelled_leader_does_not_fail_its_followers() -> None:
    origin = Origin(delay=0.1)
    cache = make_cache(origin)
    results: list[str] = []

    async def follower() -> None:
        await anyio.sleep(0.01)
        results.append((await cache.get(USER)).outcome)

    async with anyio.create_task_group() as group:
        with anyio.move_on_after(0.02):
            group.start_soon(follower)
            await cache.get(USER)  # the leader; its caller gives up after 20 ms
    assert results == ["coalesced"]
    assert origin.calls == 1


class _FinishesFirst(MemoryStore):
    """Another pod fills the entry and releases its lock just before ours is taken."""

    def __init__(self, entry: bytes, key: str) -> None:
        super().__init__(100)
        self.entry, self.key = entry, key

    async def try_lock(self, key: str, ttl_seconds: float) -> str | None:
        await self.set(self.key, self.entry, 60)
        return await super().try_lock(key, ttl_seconds)


async def test_a_lock_taken_after_another_pod_filled_the_entry_fetches_nothing() -> None:
    filled = make_cache(Origin())
    await filled.get(USER)
    entry = await filled._store.get(filled.key(USER))
    assert entry is not None
    origin = Origin()
    cache = ProfileCache(make_settings(), _FinishesFirst(entry, filled.key(USER)), origin.fetch)
    lookup = await cache.get(USER)
    assert (lookup.outcome, origin.calls) == ("coalesced", 0)
    assert lookup.profile is not None
    assert lookup.profile["email"] == "ada@example.com"


class _SlowStore(MemoryStore):
    """A store with a network round trip, counting its reads."""

    def __init__(self) -> None:
        super().__init__(100)
        self.reads = 0
        self.keys_read: list[str] = []

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.reads += 1
        self.keys_read.extend(keys)
        await anyio.sleep(0.01)
        return await super().get_many(keys)


async def test_concurrent_reads_of_one_user_share_one_store_read() -> None:
    store = _SlowStore()
    cache = ProfileCache(make_settings(), store, Origin().fetch)
    await cache.get(USER)  # fills the entry
    store.reads, store.keys_read = 0, []
    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(cache.get, USER)
    assert (store.reads, store.keys_read) == (1, [cache.key(USER)])
    assert (await cache.get(USER)).outcome == "hit"
    assert store.reads == 2  # a read after the burst asks the store again


async def test_concurrent_reads_of_different_users_share_one_store_read() -> None:
    origin = Origin()
    store = _SlowStore()
    cache = ProfileCache(make_settings(), store, origin.fetch)
    users = [f"auth0|user{index}" for index in range(20)]
    for user in users:
        await cache.get(user)  # fills each entry
    store.reads, store.keys_read = 0, []
    outcomes: dict[str, str] = {}

    async def read(user: str) -> None:
        outcomes[user] = (await cache.get(user)).outcome

    async with anyio.create_task_group() as group:
        for user in users:
            group.start_soon(read, user)
    assert store.reads == 1
    assert sorted(store.keys_read) == sorted(cache.key(user) for user in users)
    assert outcomes == dict.fromkeys(users, "hit")


NEWER = {**PROFILE, "name": "Ada Updated", "updated_at": "2026-06-01T00:00:00.000Z"}


async def test_a_read_that_was_fetching_does_not_undo_an_update() -> None:
    origin = Origin(delay=0.2)  # Auth0 answers with the profile as it was before the update
    cache = make_cache(origin)
    async with anyio.create_task_group() as group:
        group.start_soon(cache.get, USER)
        await anyio.sleep(0.05)
        assert (await cache.put(NEWER)).outcome == "stored"  # update-user, while the read fetches
    lookup = await cache.get(USER)
    assert (lookup.outcome, lookup.profile and lookup.profile["name"]) == ("hit", "Ada Updated")


async def test_a_read_that_was_fetching_does_not_bring_back_a_deleted_user() -> None:
    origin = Origin(delay=0.2)
    cache = make_cache(origin)
    async with anyio.create_task_group() as group:
        group.start_soon(cache.get, USER)
        await anyio.sleep(0.05)
        assert await cache.tombstone(USER) is True  # delete-user, while the read fetches
    lookup = await cache.get(USER)
    assert (lookup.outcome, lookup.profile) == ("hit", None)
    assert origin.calls == 1


async def test_older_profiles_never_replace_newer_ones_or_a_deletion() -> None:
    cache = make_cache(Origin())
    assert (await cache.put(NEWER)).outcome == "stored"
    assert (await cache.put(PROFILE)).outcome == "older"  # a lagging search result, a late event
    assert (await cache.get(USER)).profile["name"] == "Ada Updated"  # type: ignore[index]
    assert await cache.tombstone(USER) is True
    assert (await cache.put(NEWER)).outcome == "older"  # updated before it was deleted
    assert (await cache.get(USER)).profile is None
    recreated = {**PROFILE, "updated_at": "2999-01-01T00:00:00.000Z"}
    assert (await cache.put(recreated)).outcome == "stored"  # a change after the deletion stands


async def test_a_read_that_was_fetching_does_not_store_over_a_change_event() -> None:
    """An event carries no profile: it leaves an invalidation, which a read already fetching
    (perhaps what the change replaced) answers from but does not overwrite."""
    origin = Origin(delay=0.2)
    cache = make_cache(origin)
    async with anyio.create_task_group() as group:
        group.start_soon(cache.get, USER)
        await anyio.sleep(0.05)
        origin.profile = NEWER  # the change, in Auth0; then its event
        assert await cache.invalidate(USER) is True
    lookup = await cache.get(USER)
    assert (lookup.outcome, lookup.profile and lookup.profile["name"]) == ("miss", "Ada Updated")
    assert (await cache.get(USER)).outcome == "hit"
    assert origin.calls == 2


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


async def test_a_far_future_time_in_the_cache_does_not_block_later_writes() -> None:
    """An entry stamped in the future (a forged event, a bad clock, an entry an older version
    wrote) is believed only up to when it was written plus AUTH0_CLOCK_SKEW_SECONDS."""
    cache = make_cache(Origin(), auth0_clock_skew_seconds=0)
    future = {**PROFILE, "name": "Forged", "updated_at": "2999-01-01T00:00:00.000Z"}
    assert (await cache.put(future)).outcome == "stored"
    await anyio.sleep(0.01)
    genuine = {**PROFILE, "name": "Genuine", "updated_at": _iso(time.time())}
    assert (await cache.put(genuine)).outcome == "stored"
    assert (await cache.get(USER)).profile["name"] == "Genuine"  # type: ignore[index]

    assert await cache.tombstone(USER, datetime(2999, 1, 1, tzinfo=UTC)) is True
    await anyio.sleep(0.01)
    recreated = {**PROFILE, "name": "Recreated", "updated_at": _iso(time.time())}
    assert (await cache.put(recreated)).outcome == "stored"


async def test_a_change_event_older_than_the_entry_changes_nothing() -> None:
    origin = Origin()
    cache = make_cache(origin)
    assert (await cache.put(NEWER)).outcome == "stored"  # updated_at 2026-06-01
    before = datetime(2026, 5, 1, tzinfo=UTC)
    assert await cache.changed(USER, before, deleted=True) == "older"
    assert await cache.changed(USER, before, deleted=False) == "older"
    assert (await cache.get(USER)).outcome == "hit"
    after = datetime(2026, 7, 1, tzinfo=UTC)
    assert await cache.changed(USER, after, deleted=False) == "applied"
    assert (await cache.get(USER)).outcome == "miss"
    assert await cache.changed(USER, datetime.now(UTC), deleted=True) == "applied"
    assert (await cache.get(USER)).profile is None
    assert origin.calls == 1  # the tombstone answers


async def test_after_a_change_event_the_profile_before_it_stands_in_only_if_auth0_fails() -> None:
    origin = Origin()
    cache = make_cache(origin)
    await cache.get(USER)
    assert await cache.changed(USER, datetime.now(UTC), deleted=False) == "applied"
    origin.error = Auth0Error("down", 503)
    stale = await cache.get(USER)
    assert (stale.outcome, stale.profile and stale.profile["name"]) == ("stale", "Ada")
    origin.error, origin.profile = None, NEWER
    fresh = await cache.get(USER)
    assert (fresh.outcome, fresh.profile and fresh.profile["name"]) == ("miss", "Ada Updated")
    assert origin.calls == 3


async def test_a_lock_nobody_holds_any_more_is_taken_instead_of_waited_out() -> None:
    """Its holder died, or Redis restarted empty: the waiter takes the lock and fetches."""
    origin = Origin()
    cache = make_cache(origin, profile_lock_seconds=5.0)
    lock_key = cache.lock_key(USER)
    assert await cache._store.try_lock(lock_key, 60) is not None  # another pod's

    async def vanish() -> None:
        await anyio.sleep(0.1)
        await cache._store.delete(lock_key)  # without writing the entry

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(vanish)
        lookup = await cache.get(USER)
    assert (lookup.outcome, origin.calls) == ("miss", 1)
    assert time.monotonic() - started < 1.0  # not the 5 s the lock could have lived


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"n": value}
    return value


def test_metadata_no_write_could_store_is_left_out_and_named() -> None:
    profile = {
        "user_id": USER,
        "user_metadata": {
            "deep": _nested(300),
            "fine": _nested(10),
            "surrogate": "\ud800",
            "big": "x" * 12_000,
            "bigger": "y" * 15_000,
            "theme": "dark",
        },
        "app_metadata": {"role": "admin"},
    }
    visible = allowlisted(profile, include_app_metadata=True)
    assert visible.profile["user_metadata"] == {
        "fine": _nested(10),
        "big": "x" * 12_000,
        "theme": "dark",
    }
    assert visible.omitted == (
        "user_metadata.deep",
        "user_metadata.surrogate",
        "user_metadata.bigger",  # the largest goes first, until the rest fits in 16 kB
    )
    assert visible.profile["app_metadata"] == {"role": "admin"}
    assert allowlisted(PROFILE, include_app_metadata=False).omitted == ()
    not_an_object = allowlisted({"user_id": USER, "user_metadata": ["x"]}, False)
    assert (not_an_object.profile, not_an_object.omitted) == ({"user_id": USER}, ("user_metadata",))
    null = allowlisted({"user_id": USER, "user_metadata": None}, False)
    assert (null.profile, null.omitted) == ({"user_id": USER}, ())
