"""The clients one process shares between all its requests, built once by the app's lifespan."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from userapi.adapters.access_tokens import KeySet, TokenVerifier
from userapi.adapters.database import Database, create_database
from userapi.adapters.http_client import LazyHTTP
from userapi.adapters.local_cache import LocalCache
from userapi.adapters.sealed_store import credentials_store
from userapi.adapters.shared_store import (
    RedisStore,
    SharedStore,
    create_store,
    last_segment,
)
from userapi.domain.accounts import Accounts
from userapi.domain.idempotency import IdempotencyKeys
from userapi.domain.profile_cache import ProfileCache
from userapi.domain.seen_events import SeenEvents
from userapi.platform.settings import Settings

if TYPE_CHECKING:
    from userapi.adapters.auth0_management import ManagementClient
    from userapi.adapters.client_quota import ClientQuota

log = logging.getLogger("userapi.resources")


@dataclass
class Resources:
    """Clients shared by every request of one process. Creating them does no I/O: Auth0 is
    contacted by the first request that needs it, Redis and the database beside serving, once
    the lifespan has started (`warm`)."""

    settings: Settings
    http: LazyHTTP
    store: SharedStore
    # The JWKS and the Management token: sealed in Redis (adapters/sealed_store.py).
    credentials: SharedStore
    verifier: TokenVerifier
    database: Database
    accounts: Accounts
    idempotency: IdempotencyKeys
    # CLIENT_QUOTA_REQUESTS set: each caller's requests counted in Redis (None: off, and the
    # module is never imported).
    quota: ClientQuota | None = None
    # This process's copy of profiles and account rows, kept in step through Redis (None
    # without Redis, or with LOCAL_CACHE_SECONDS 0).
    local: LocalCache | None = None

    @classmethod
    def create(cls, settings: Settings) -> Resources:
        http = LazyHTTP(settings)
        store = create_store(settings)
        credentials = credentials_store(settings, store)
        verifier = TokenVerifier(settings, KeySet(settings, http.client, credentials))
        database = create_database(settings)
        local = None
        redis = _redis(store)
        if redis is not None and settings.local_cache_seconds > 0:
            # A user's profile and account row are answered together, and dropped together.
            local = LocalCache(
                settings.local_cache_max_entries, settings.local_cache_seconds, last_segment
            )
            # Listening starts now, beside the first request: the copy serves once subscribed.
            redis.listen(local)
        quota = None
        if settings.client_quota_requests is not None:
            from userapi.adapters.client_quota import ClientQuota

            quota = ClientQuota(settings, _redis(store))
        return cls(
            settings=settings,
            http=http,
            store=store,
            credentials=credentials,
            verifier=verifier,
            database=database,
            accounts=Accounts(database, local, store, settings.redis_key_prefix),
            idempotency=IdempotencyKeys(settings, database),
            quota=quota,
            local=local,
        )

    @cached_property
    def auth0(self) -> ManagementClient:
        # Built on first use, with httpx: a cache hit never needs either.
        from userapi.adapters.auth0_management import ManagementClient

        budget = None
        if self.settings.auth0_management_rate_per_second is not None:
            from userapi.adapters.rate_budget import RateBudget

            budget = RateBudget(self.settings, _redis(self.store))
        return ManagementClient(self.settings, self.http.client(), self.credentials, budget)

    @cached_property
    def profiles(self) -> ProfileCache:
        return ProfileCache(self.settings, self.store, self._fetch_profile, self.local)

    @cached_property
    def events(self) -> SeenEvents:
        return SeenEvents(self.settings, self.store)

    async def warm(self, *, database: bool) -> None:
        """What the first request would otherwise open itself, opened while the pod waits for
        it: the database connection, when the endpoint uses the database (Redis is already
        being subscribed to, in `create`)."""
        if database:
            await self.database.warm()

    async def _fetch_profile(self, user_id: str) -> dict[str, Any] | None:
        return await self.auth0.get_user(user_id)

    async def close(self) -> None:
        # Each close is attempted even if another fails: a pod must not leak connections.
        for name, close in (
            ("database", self.database.close),
            ("credentials", self.credentials.close),
            ("store", self.store.close),
            ("http", self.http.aclose),
        ):
            try:
                await close()
            except Exception as exc:
                log.warning("closing %s failed", name, extra={"error": repr(exc)})


def _redis(store: SharedStore) -> RedisStore | None:
    """The Redis behind `store`, for what needs its scripts (quotas, the Auth0 budget); None
    when the store is this process's own."""
    return store if isinstance(store, RedisStore) else None
