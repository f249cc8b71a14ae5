"""Auth0 change events already applied, remembered in the shared store (`<prefix>event:<id>`,
the id a key_segment()) for EVENT_DEDUPE_SECONDS: Auth0 delivers at least once, so a
redelivery must be a duplicate."""

from __future__ import annotations

from userapi.adapters.shared_store import SharedStore, key_segment
from userapi.platform.settings import Settings


class SeenEvents:
    def __init__(self, settings: Settings, store: SharedStore) -> None:
        self._store = store
        self._prefix = f"{settings.redis_key_prefix}event:"
        self._ttl = settings.event_dedupe_seconds

    async def seen(self, event_id: str) -> bool:
        return await self._store.get(self._key(event_id)) is not None

    async def remember(self, event_id: str) -> bool:
        """Once the event's change is applied. Best effort: if this write fails, a redelivery
        applies the change again, which is harmless."""
        return await self._store.set(self._key(event_id), b"1", self._ttl)

    def _key(self, event_id: str) -> str:
        # Encoded like every id in a key; an id without '%', ':' or the like keeps its old key,
        # so what was remembered before this encoding still counts.
        return self._prefix + key_segment(event_id)
