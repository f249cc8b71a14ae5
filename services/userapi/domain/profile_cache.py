"""Auth0 profiles behind the shared cache: the memoization that makes a ~500 ms call ~1 ms.

An entry holds the allowlisted profile, when it was fetched and Auth0's updated_at. It is fresh
for PROFILE_FRESH_TTL_SECONDS (with jitter so that entries filled together do not expire
together), then kept for PROFILE_STALE_TTL_SECONDS more to stand in when Auth0 fails
(RFC 5861 stale-if-error). A 404 is remembered for PROFILE_NEGATIVE_TTL_SECONDS.

Writes never put older knowledge over newer. A profile replaces the entry unless the entry's
Auth0 updated_at is later (search results lag behind writes). A deleted user leaves a
tombstone, a negative entry stamped with the deletion time, so that neither an older profile
nor a read that was already fetching brings the user back. A change event leaves an
invalidation: an entry that is never fresh, stamped with the change's time, so that the next
read asks Auth0, and neither an older profile nor a read that was already fetching puts back
what the change replaced. A miss writes what it fetched only if nobody wrote the entry after
its fetch began.

No time is believed beyond the moment it was written plus AUTH0_CLOCK_SKEW_SECONDS: one entry
stamped far in the future (a forged event, a bad clock) would otherwise refuse every genuine
write until it expired.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from userapi.adapters.local_cache import MISSING, LocalCache
from userapi.adapters.rate_budget import BudgetSpent, impatient
from userapi.adapters.shared_store import SharedStore, fill_once, key_segment
from userapi.domain.json_values import METADATA_MAX_BYTES, METADATA_MAX_DEPTH, json_size, unstorable
from userapi.domain.timestamps import parse_timestamp
from userapi.platform import context, telemetry
from userapi.platform.batch import Batcher
from userapi.platform.errors import Auth0Error
from userapi.platform.settings import Settings

log = logging.getLogger("userapi.profiles")

# The only Auth0 fields an endpoint ever returns: identities, tokens of social providers,
# logins count and the like stay inside Auth0.
PROFILE_FIELDS = (
    "user_id",
    "email",
    "email_verified",
    "name",
    "given_name",
    "family_name",
    "nickname",
    "picture",
    "created_at",
    "updated_at",
    "last_login",
    "user_metadata",
)

_LOCK_POLL_SECONDS = 0.02
# The cache metric's labels per outcome, built once: a cached read is the hot path.
_LOOKUP_LABELS = {
    outcome: {"userapi.cache": "profile", "userapi.outcome": outcome}
    for outcome in ("hit", "miss", "stale", "coalesced")
}


@dataclass(frozen=True)
class Visible:
    """What an endpoint may show of an Auth0 profile, and the metadata it had to leave out."""

    profile: dict[str, Any]
    omitted: tuple[str, ...] = ()


def allowlisted(profile: dict[str, Any], include_app_metadata: bool) -> Visible:
    """The allowlisted fields, with metadata cut to what this API would accept as a write.

    Auth0 may hold metadata that no write through this API could have stored (the dashboard,
    an Action, another app): nested too deep to render (pydantic gives up at about 255 levels),
    an unpaired surrogate that no response can encode, or far over 16 kB. A read still answers:
    each top-level metadata key that breaks a limit of domain/json_values.py is left out, largest
    first for size, and named (`user_metadata.<key>`) in `omitted`.
    """
    kept = {name: profile[name] for name in PROFILE_FIELDS if name in profile}
    if include_app_metadata and "app_metadata" in profile:
        kept["app_metadata"] = profile["app_metadata"]
    omitted: list[str] = []
    for field in ("user_metadata", "app_metadata"):
        if field not in kept:
            continue
        metadata = kept[field]
        if metadata is None:  # as good as absent: the response model's default stands in
            del kept[field]
            continue
        if not isinstance(metadata, dict):
            del kept[field]
            omitted.append(field)
            continue
        shown, left_out = _presentable(metadata)
        if left_out:
            kept[field] = shown
            omitted.extend(f"{field}.{key}" for key in left_out)
    return Visible(kept, tuple(omitted))


def _presentable(metadata: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    # Each value sits one level below the metadata object, as in fields.Metadata's check.
    left_out = [
        key
        for key, value in metadata.items()
        if unstorable({key: value}, METADATA_MAX_DEPTH) is not None
    ]
    shown = {key: value for key, value in metadata.items() if key not in left_out}
    sizes = {key: json_size(value) for key, value in shown.items()}
    total = sum(sizes.values()) + sum(json_size(key) + 2 for key in sizes)  # ':' and ','
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if total <= METADATA_MAX_BYTES:
            break
        total -= sizes[key] + json_size(key) + 2
        del shown[key]
        left_out.append(key)
    return shown, left_out


@dataclass(frozen=True)
class CacheEntry:
    profile: dict[str, Any] | None  # None: Auth0 said the user does not exist
    fetched_at: float
    fresh_until: float
    updated_at: str | None  # Auth0's; for a tombstone, when the user was deleted
    omitted: tuple[str, ...] = ()  # what allowlisted() left out of the profile

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    @property
    def invalidated(self) -> bool:
        """Left by a change event: never fresh, it holds when the change happened (and the
        profile from before it, to stand in only when Auth0 fails)."""
        return self.fresh_until <= self.fetched_at

    def encode(self) -> bytes:
        return json.dumps(
            {
                "profile": self.profile,
                "fetched_at": self.fetched_at,
                "fresh_until": self.fresh_until,
                "updated_at": self.updated_at,
                "omitted": self.omitted,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> CacheEntry | None:
        try:
            data = json.loads(raw)
            return cls(
                profile=data["profile"],
                fetched_at=float(data["fetched_at"]),
                fresh_until=float(data["fresh_until"]),
                updated_at=data.get("updated_at"),
                omitted=tuple(data["omitted"]),
            )
        except (ValueError, KeyError, TypeError):
            return None  # an entry from an incompatible version is just a miss


@dataclass(frozen=True)
class Stored:
    """What `put` did with a profile, and what an endpoint may answer with: the allowlisted
    fields, metadata cut to the write limits (`visible.omitted` names what was left out)."""

    outcome: Literal["stored", "older", "failed"]
    visible: Visible


@dataclass(frozen=True)
class Lookup:
    profile: dict[str, Any] | None
    outcome: str  # hit | miss | stale | coalesced
    fetched_at: float
    omitted: tuple[str, ...] = ()


class ProfileCache:
    def __init__(
        self,
        settings: Settings,
        store: SharedStore,
        fetch: Callable[[str], Awaitable[dict[str, Any] | None]],
        local: LocalCache | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._fetch = fetch
        # This process's copy of the entries it read (adapters/local_cache.py): a hit there
        # costs no round trip. Only lookups use it; a write judges what the store holds.
        self._local = local
        # Entries hold what the allowlist kept, so pods that keep app_metadata and pods that do
        # not (a changed setting, a rolling deploy) must not read each other's.
        variant = "+app_metadata" if settings.profile_include_app_metadata else ""
        # v2: entries hold what allowlisted() cut to the write limits, and say what it left out.
        # v3: the user id is a key_segment(), so no id names another user's entry or lock.
        self._prefix = f"{settings.redis_key_prefix}profile:v3{variant}:"
        # The Auth0 fields an entry keeps: a caller fetching profiles (list-users) asks for
        # these and no more.
        kept = (*PROFILE_FIELDS, "app_metadata") if settings.profile_include_app_metadata else ()
        self.fields = ",".join(kept or PROFILE_FIELDS)
        self._inflight: dict[str, asyncio.Task[Lookup]] = {}
        # Stale profiles answered because the Auth0 budget had no token: each refreshed once,
        # in the background, waiting its turn for a token (held here so none is collected).
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        # Reads asked for in one event-loop turn go to the store as one MGET, and concurrent
        # reads of one user as one key: a burst costs one round trip, not one per request.
        self._reads: Batcher[str, CacheEntry | None] = Batcher(self._read_many)

    def key(self, user_id: str) -> str:
        return self._prefix + key_segment(user_id)

    def lock_key(self, user_id: str) -> str:
        return self.key(user_id) + ":lock"

    async def get(self, user_id: str) -> Lookup:
        """The profile (None when the user does not exist); raises Auth0Error with nothing stale."""
        with telemetry.span("userapi.cache.get profile") as span:
            lookup = await self._lookup(user_id)
            span.outcome(lookup.outcome)
        telemetry.add("userapi.cache.lookups", 1, _LOOKUP_LABELS[lookup.outcome])
        ctx = context.current()
        if ctx is not None:
            ctx.cache = lookup.outcome
        return lookup

    def local_hit(self, user_id: str) -> CacheEntry | None:
        """A fresh entry from this process's copy, with no await: the cached read's fast path
        (get-user's direct route answers from it without a task switch)."""
        if self._local is None:
            return None
        entry = self._local.get(self.key(user_id))
        if entry is MISSING or not entry.is_fresh(time.time()):
            return None
        # No span for a dict lookup: the request's span says where the profile came from.
        telemetry.annotate("userapi.cache.outcome", "hit")
        telemetry.annotate("userapi.cache.source", "process")
        telemetry.add("userapi.cache.lookups", 1, _LOOKUP_LABELS["hit"])
        ctx = context.current()
        if ctx is not None:
            ctx.cache = "hit"
        return entry  # type: ignore[no-any-return]

    async def _lookup(self, user_id: str) -> Lookup:
        if self._local is not None:
            entry = self._local.get(self.key(user_id))
            if entry is not MISSING and entry.is_fresh(time.time()):
                return Lookup(entry.profile, "hit", entry.fetched_at, entry.omitted)
        cached = await self._read(user_id)
        if cached is not None and cached.is_fresh(time.time()):
            return Lookup(cached.profile, "hit", cached.fetched_at, cached.omitted)
        # Single-flight: concurrent misses for one user in this process share one Auth0 call. The
        # fill runs as its own task so that a caller hanging up does not cancel the others.
        task = self._inflight.get(user_id)
        if task is None:
            task = asyncio.create_task(self._fill(user_id, cached))
            self._inflight[user_id] = task
            task.add_done_callback(lambda done: self._settle(user_id, done))
            return await asyncio.shield(task)
        shared = await asyncio.shield(task)
        return Lookup(shared.profile, "coalesced", shared.fetched_at, shared.omitted)

    def _settle(self, user_id: str, task: asyncio.Task[Lookup]) -> None:
        self._inflight.pop(user_id, None)
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have hung up

    async def _fill(self, user_id: str, stale: CacheEntry | None) -> Lookup:
        async def fresh_entry() -> Lookup | None:
            entry = await self._read(user_id)
            if entry is not None and entry.is_fresh(time.time()):
                return Lookup(entry.profile, "coalesced", entry.fetched_at, entry.omitted)
            return None

        # Another pod fetching this user: its result lands in the store shortly.
        lock_seconds = self._settings.profile_lock_seconds
        return await fill_once(
            self._store,
            self.lock_key(user_id),
            lock_seconds=lock_seconds,
            wait_seconds=lock_seconds,
            poll_seconds=_LOCK_POLL_SECONDS,
            read=fresh_entry,
            fill=lambda: self._fetch_and_store(user_id, stale),
        )

    async def _fetch_and_store(self, user_id: str, stale: CacheEntry | None) -> Lookup:
        started = time.time()
        try:
            if stale is not None and stale.profile is not None:
                # A stale answer beats waiting for the Auth0 budget: no free token, no wait.
                with impatient():
                    profile = await self._fetch(user_id)
            else:
                profile = await self._fetch(user_id)
        except Auth0Error as exc:
            if stale is not None and stale.profile is not None:
                log.warning(
                    "Auth0 failed; serving a stale profile",
                    extra={
                        "user_id": user_id,
                        "age_s": round(time.time() - stale.fetched_at, 1),
                        "error": repr(exc),
                    },
                )
                if isinstance(exc, BudgetSpent):
                    telemetry.add("userapi.auth0.budget.stale_served", 1)
                    self._refresh_later(user_id)
                return Lookup(stale.profile, "stale", stale.fetched_at, stale.omitted)
            raise
        # A write that landed while we fetched (an update, a deletion) is newer than what we
        # hold: it stays, and is what this read answers. A change event that landed meanwhile
        # may postdate what Auth0 gave us: we answer it, but leave the entry to the next read.
        current = await self._read(user_id)
        entry = self._entry(profile)
        if current is not None and current.fetched_at > started:
            if current.invalidated:
                return Lookup(entry.profile, "miss", entry.fetched_at, entry.omitted)
            return Lookup(current.profile, "miss", current.fetched_at, current.omitted)
        await self._write(user_id, entry)
        return Lookup(entry.profile, "miss", entry.fetched_at, entry.omitted)

    def _refresh_later(self, user_id: str) -> None:
        if user_id in self._refreshing:
            return

        async def refresh() -> None:
            try:
                # No stale stand-in given: this fetch waits for a token, as a miss does.
                await self._fetch_and_store(user_id, None)
            except Auth0Error as exc:
                log.info(
                    "background refresh of a stale profile failed",
                    extra={"user_id": user_id, "error": repr(exc)},
                )
            finally:
                self._refreshing.pop(user_id, None)

        self._refreshing[user_id] = asyncio.create_task(refresh())

    def _entry(self, profile: dict[str, Any] | None) -> CacheEntry:
        now = time.time()
        settings = self._settings
        if profile is None:
            return CacheEntry(None, now, now + settings.profile_negative_ttl_seconds, None)
        jitter = 1 + random.uniform(-settings.profile_ttl_jitter, settings.profile_ttl_jitter)
        kept = allowlisted(profile, settings.profile_include_app_metadata)
        fresh_until = now + settings.profile_fresh_ttl_seconds * jitter
        return CacheEntry(
            kept.profile, now, fresh_until, kept.profile.get("updated_at"), kept.omitted
        )

    async def _read(self, user_id: str) -> CacheEntry | None:
        return await self._reads.load(user_id)

    async def _read_many(self, user_ids: Sequence[str]) -> list[CacheEntry | None]:
        keys = [self.key(user_id) for user_id in user_ids]
        local = self._local
        if local is not None:
            since = local.begin()
        raws = await self._store.get_many(keys)
        entries = [CacheEntry.decode(raw) if raw is not None else None for raw in raws]
        if local is not None:
            now = time.time()
            for key, entry in zip(keys, entries, strict=True):
                if entry is not None and entry.is_fresh(now):
                    local.put(key, entry, since, entry.fresh_until - now)
        return entries

    async def _write(self, user_id: str, entry: CacheEntry, ttl: float | None = None) -> bool:
        if ttl is None:
            ttl = entry.fresh_until - entry.fetched_at
            if entry.profile is not None:
                ttl += self._settings.profile_stale_ttl_seconds
        key = self.key(user_id)
        try:
            if ttl > 0:
                return await self._store.set(key, entry.encode(), ttl, announce=True)
            return await self._store.delete(key, announce=True)
        finally:
            if self._local is not None:
                self._local.drop(key)

    def _believed(self, stamp: datetime, written_at: float) -> datetime:
        """`stamp` as far as it can be true: no later than when it was written, plus the clock
        skew allowed between Auth0 and us."""
        latest = datetime.fromtimestamp(written_at, UTC) + timedelta(
            seconds=self._settings.auth0_clock_skew_seconds
        )
        return min(stamp, latest)

    def _stamp(self, entry: CacheEntry) -> datetime | None:
        """The entry's time (Auth0's updated_at, a deletion's, a change's), as far as believed:
        entries written before this limit existed may hold any time."""
        stamp = parse_timestamp(entry.updated_at)
        return self._believed(stamp, entry.fetched_at) if stamp is not None else None

    async def put(self, profile: dict[str, Any]) -> Stored:
        """Store a profile fetched by other means (a create, an update, a list) unless the entry
        is newer: a later Auth0 updated_at, a later deletion, or a later change event.

        Read-then-write is not atomic; a race can keep the older of two versions for at most
        one fresh TTL, which the next change event or expiry repairs.
        """
        user_id = str(profile["user_id"])
        cached = await self._read(user_id)
        incoming = parse_timestamp(profile.get("updated_at"))
        if cached is not None and incoming is not None:
            current = self._stamp(cached)
            if current is not None and current > self._believed(incoming, time.time()):
                return Stored(
                    "older", allowlisted(profile, self._settings.profile_include_app_metadata)
                )
        entry = self._entry(profile)
        assert entry.profile is not None
        if (
            cached is not None
            and cached.is_fresh(time.time())
            and cached.profile == entry.profile
            and cached.omitted == entry.omitted
        ):
            # Already held, fresh: a write would only announce a change that is none, and
            # every process would drop its copy of the user (list-users puts a page of them).
            return Stored("stored", Visible(cached.profile, cached.omitted))
        written = await self._write(user_id, entry)
        return Stored("stored" if written else "failed", Visible(entry.profile, entry.omitted))

    async def tombstone(self, user_id: str, deleted_at: datetime | None = None) -> bool:
        """The user was deleted (at `deleted_at`, default now): answer 404 from the cache, and
        outlive any read already fetching the old profile. False when the store refused."""
        return await self._mark(user_id, deleted_at or datetime.now(UTC), deleted=True)

    async def invalidate(self, user_id: str, changed_at: datetime | None = None) -> bool:
        """The user changed (at `changed_at`, default now): the next read asks Auth0, and a read
        already fetching does not store what it got. False when the store refused: the old
        entry may still be served."""
        return await self._mark(user_id, changed_at or datetime.now(UTC), deleted=False)

    async def changed(
        self, user_id: str, at: datetime, deleted: bool
    ) -> Literal["applied", "older", "failed"]:
        """A change event, which carries no data this cache believes, only a user and a time:
        a tombstone or an invalidation, unless the entry already knows of something later."""
        cached = await self._read(user_id)
        current = self._stamp(cached) if cached is not None else None
        if current is not None and current > self._believed(at, time.time()):
            return "older"
        done = await self._mark(user_id, at, deleted, None if deleted else cached)
        return "applied" if done else "failed"

    async def _mark(
        self, user_id: str, at: datetime, deleted: bool, before: CacheEntry | None = None
    ) -> bool:
        now = time.time()
        settings = self._settings
        # As long as a read already fetching can take, so that it finds the mark and keeps off.
        lifetime = max(settings.profile_negative_ttl_seconds, settings.auth0_request_budget_seconds)
        stamp = self._believed(at, now).isoformat()
        if deleted:
            return await self._write(user_id, CacheEntry(None, now, now + lifetime, stamp))
        # Never fresh. The profile from before the change (Auth0's, never the event's) stays
        # only as a stale stand-in for when Auth0 fails, as long as it would have anyway.
        if before is None or before.profile is None:
            return await self._write(user_id, CacheEntry(None, now, now, stamp), lifetime)
        stale_until = before.fresh_until + settings.profile_stale_ttl_seconds
        entry = CacheEntry(before.profile, now, now, stamp, before.omitted)
        return await self._write(user_id, entry, max(lifetime, stale_until - now))
