"""A per-process copy (L1) of what the shared store and the database hold, dropped when any pod
writes: a cached read then costs no round trip at all.

Redis and PostgreSQL stay the source. Every writer announces what it wrote on the store's
invalidation channel (`RedisStore.announce`, a Redis PUBLISH sent with the write), and every
process listens on that channel and drops its copy (`RedisStore.listen`). The copy is used only
while the listening connection is up: a process that may have missed an announcement (Redis
down, restarted, the connection lost) empties its copy and reads the shared store, as it did
before there was one, until it listens again.

A read that was in flight when an announcement arrived keeps what it read out of the copy:
its answer may predate the write (the reply and the announcement come on two connections, in
either order). `begin()` before the read and `put(..., since=...)` after it enforce that.

Keys of one unit (`unit_of`: a user's profile and account row) are dropped together. A reader
that answers them as one (get-user) then never pairs a write's new profile, whose announcement
it has handled, with a copy of the old row whose announcement is still on its way: the writer
announces them one after the other, and a request can be handled between the two.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

MISSING: Final = object()


class LocalCache:
    """Keys are the store's (or a name in its key space): what an announcement names."""

    def __init__(
        self,
        max_entries: int,
        max_age_seconds: float,
        unit_of: Callable[[str], str] = str,
    ) -> None:
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        # The keys held, by unit: an announcement of any of them drops them all.
        self._unit_of = unit_of
        self._units: dict[str, set[str]] = {}
        self._max_entries = max_entries
        # The bound on a copy whose announcement never came: a writer that crashed between
        # its commit and its PUBLISH, or a change made outside userapi (SQL by hand).
        self._max_age = max_age_seconds
        # Bumped by every drop: a read that began before it may hold what a write replaced.
        self._epoch = 0
        # True while this process listens on the invalidation channel.
        self.active = False

    def get(self, key: str) -> Any:
        """The copy, or MISSING."""
        if not self.active:
            return MISSING
        item = self._entries.get(key)
        if item is None:
            return MISSING
        value, expires = item
        if time.monotonic() >= expires:
            self._forget(key)
            return MISSING
        return value

    def begin(self) -> int:
        """Before a read whose answer may be kept: pass the result to `put(since=...)`."""
        return self._epoch

    def put(self, key: str, value: Any, since: int, seconds: float | None = None) -> None:
        """Keep `value` unless something was dropped since `begin()` returned `since`."""
        if not self.active or since != self._epoch:
            return
        age = self._max_age if seconds is None else min(seconds, self._max_age)
        if age <= 0:
            return
        self._entries[key] = (value, time.monotonic() + age)
        self._units.setdefault(self._unit_of(key), set()).add(key)
        if len(self._entries) > self._max_entries:
            self._forget(next(iter(self._entries)))

    def drop(self, key: str) -> None:
        """`key` changed: drop it and every key of its unit."""
        self._epoch += 1
        for member in self._units.pop(self._unit_of(key), ()):
            del self._entries[member]

    def _forget(self, key: str) -> None:
        del self._entries[key]
        unit = self._unit_of(key)
        members = self._units[unit]
        members.discard(key)
        if not members:
            del self._units[unit]

    def start(self) -> None:
        """Listening: announcements from now on reach this copy."""
        self._epoch += 1
        self._entries.clear()
        self._units.clear()
        self.active = True

    def stop(self) -> None:
        """Announcements may be missed from now on: forget everything and stop serving."""
        self._epoch += 1
        self._entries.clear()
        self._units.clear()
        self.active = False

    def __len__(self) -> int:
        return len(self._entries)
