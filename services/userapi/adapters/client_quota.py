"""Per-client request quotas: CLIENT_QUOTA_REQUESTS per CLIENT_QUOTA_WINDOW_SECONDS per endpoint,
counted in the shared Redis so that every pod of the endpoint counts against one number.

A fixed window on Redis's clock: one round trip (a script that counts and says how long the
window has left), and a Retry-After that is honest, since the window's end is the same for
every pod. Checks share that round trip (platform/batch.py), as cached reads share their MGET,
and one batch at a time: the checks asked while one is on its way go together in the next, so
the batches grow with the load and a quota costs the hot path a fraction of a call, not one.
The client is the token's `azp` (the application), else its `sub`; it is hashed into
the key, so no client id, however long or odd, makes a key longer than ~100 bytes, names another
client's counter, or shows up in Redis in clear.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from userapi.platform import telemetry
from userapi.platform.batch import Batcher
from userapi.platform.errors import APIError

if TYPE_CHECKING:
    from userapi.adapters.access_tokens import Principal
    from userapi.adapters.shared_store import RedisStore
    from userapi.platform.settings import Settings

# KEYS: one client counter (without its window) per request, repeated when one client sent
# several: each is counted. ARGV[1]: the window in ms. Returns each request's count in this
# window, then the ms until it ends.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local start = now - (now % window)
local counts = {}
for i, base in ipairs(KEYS) do
  local key = base .. ':' .. start
  counts[i] = redis.call('INCR', key)
  if counts[i] == 1 then redis.call('PEXPIRE', key, window + 1000) end
end
counts[#KEYS + 1] = start + window - now
return counts
"""

_POLICY = "quota"  # the policy's name in RateLimit-Policy and RateLimit


def client_of(principal: Principal) -> str:
    """Who is counted: the application the token was issued to, else its subject."""
    azp = principal.claims.get("azp")
    return azp if isinstance(azp, str) and azp else principal.subject


def client_key(prefix: str, endpoint: str, client: str) -> str:
    digest = hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{prefix}quota:{endpoint}:{digest}"


class ClientQuota:
    def __init__(self, settings: Settings, redis: RedisStore | None) -> None:
        assert settings.client_quota_requests is not None
        self._requests = settings.client_quota_requests
        self._window = settings.client_quota_window_seconds
        self._prefix = settings.redis_key_prefix
        self._redis = redis
        self._policy = f'"{_POLICY}";q={self._requests};w={self._window}'
        # Without Redis (none configured): this process's own count, for the current window.
        self._local_window = 0
        self._local: dict[str, int] = {}
        # Each request its own batch key (the serial number): the Batcher merges equal keys,
        # and two requests of one client must count twice.
        self._serial = itertools.count()
        # One batch on its way at a time: every request makes this call, so the checks asked
        # while one is answered go together in the next (group commit).
        self._counts: Batcher[tuple[str, int], tuple[int, float] | None] = Batcher(
            self._count_many, one_at_a_time=True
        )

    async def check(self, endpoint: str, principal: Principal) -> None:
        """Counts this request; raises a 429 APIError when the client is over its quota."""
        key = client_key(self._prefix, endpoint, client_of(principal))
        counted = await self._count(key)
        if counted is None:
            # Redis unreachable: the quota protects the service, it must not take it down.
            telemetry.add("userapi.quota.unchecked", 1)
            return
        count, seconds_left = counted
        if count <= self._requests:
            return
        telemetry.add("userapi.quota.rejected", 1)
        reset = max(1, math.ceil(seconds_left))
        raise APIError(
            429,
            "quota_exceeded",
            f"This client made more than {self._requests} requests to this endpoint in "
            f"{self._window} s; retry after {reset} s.",
            {
                "Retry-After": str(reset),
                "RateLimit-Policy": self._policy,
                "RateLimit": f'"{_POLICY}";r=0;t={reset}',
            },
        )

    async def _count(self, key: str) -> tuple[int, float] | None:
        if self._redis is None:
            return self._count_locally(key)
        return await self._counts.load((key, next(self._serial)))

    async def _count_many(
        self, requests: Sequence[tuple[str, int]]
    ) -> list[tuple[int, float] | None]:
        assert self._redis is not None
        keys = [key for key, _ in requests]
        result = await self._redis.run_script(_SCRIPT, keys, [self._window * 1000])
        if not isinstance(result, list) or len(result) != len(keys) + 1:
            return [None] * len(keys)
        left = int(result[-1]) / 1000
        return [(int(count), left) for count in result[:-1]]

    def _count_locally(self, key: str) -> tuple[int, float]:
        now = time.time()
        window = int(now // self._window)
        if window != self._local_window:
            self._local_window, self._local = window, {}
        self._local[key] = self._local.get(key, 0) + 1
        return self._local[key], (window + 1) * self._window - now
