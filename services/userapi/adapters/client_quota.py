"""Per-client request quotas: CLIENT_QUOTA_REQUESTS per CLIENT_QUOTA_WINDOW_SECONDS per endpoint,
counted in the shared Redis so that every pod of the endpoint counts against one number.

A fixed window on Redis's clock: a script counts and says how long the window has left, so
Retry-After is honest, the window's end being the same for every pod. Every request is counted
in Redis; what differs is whether it waits for its count:
- A client far from its limit, as this pod last heard from Redis, is answered at once: this
  pod may admit up to its share of half of what is left (what is left ÷ 2 ÷ one more than the
  pods that counted this client in this window) before it hears again. Its counts go to Redis
  within FLUSH_SECONDS (200 ms), all clients' in one call. Waiting for Redis on every request
  cost the cached read a third of its throughput (docs/performance.md).
- Otherwise (the first request of a window, a client near its limit) the request waits for
  its own count, in the next call (one call on its way at a time: what is asked meanwhile goes
  together, so the calls grow with the load, not their number). Refusals are decided here,
  so a 429 is never given on a guess.
Near the limit the pods' shares shrink to nothing, but a share is taken on what a pod last
heard, up to _FRESH_SECONDS ago: pods serving one client at once can let through, between two
of their calls, a little more than the quota (two pods alternating on a quota of 100 let up
to 101 through, tests/unit/test_client_quota.py). Like API Gateway's usage plans, the quota is a
target, not a hard limit (docs/architecture.md, "Per-client quotas").

The client is the token's `azp` (the application), else its `sub`; it is hashed into the key,
so no client id, however long or odd, makes a key longer than ~100 bytes, names another
client's counter, or shows up in Redis in clear.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from userapi.platform import telemetry
from userapi.platform.errors import APIError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from userapi.adapters.access_tokens import Principal
    from userapi.adapters.shared_store import RedisStore
    from userapi.platform.settings import Settings

# KEYS: one client counter (without its window) per client counted in this call. ARGV[1]: the
# window in ms, ARGV[2]: this pod's id, then per key how many of its requests to count. The
# counter is a hash of counts by pod, so one key per client and window says both the total and
# how many pods share the client. Returns per key the total and the pods, then the ms until
# the window ends.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local start = now - (now % window)
local out = {}
for i, base in ipairs(KEYS) do
  local key = base .. ':' .. start
  redis.call('HINCRBY', key, ARGV[2], ARGV[2 + i])
  local total = 0
  local counts = redis.call('HVALS', key)
  for _, count in ipairs(counts) do total = total + tonumber(count) end
  if total == tonumber(ARGV[2 + i]) then redis.call('PEXPIRE', key, window + 1000) end
  out[2 * i - 1] = total
  out[2 * i] = #counts
end
out[#out + 1] = start + window - now
return out
"""

_POLICY = "quota"  # the policy's name in RateLimit-Policy and RateLimit
# How long a count admitted at once may wait to reach Redis: a call per 200 ms at most, all
# clients' counts together, whatever the request rate. The shares bound what a pod admits
# before it hears again, not this. Each call costs the event loop about 0.7 ms of CPU (the
# task, redis-py, the reply's wake-up): a call per 50 ms cost the cached read about 2 %
# (docs/performance.md, "Issue 22").
FLUSH_SECONDS = 0.2
_MAX_CLIENTS = 10_000  # clients whose last count this pod remembers
_MAX_REMEMBERED_ID = 256  # characters: longer client ids are not kept (memory)
# A count older than this says too little of what the other pods did since: the next request
# waits for its own. Two and a half flushes: a busy pod hears every 200 ms plus a round trip
# plus the event loop's lag, which reached 50 ms in `make bench`.
_FRESH_SECONDS = 0.5


def client_of(principal: Principal) -> str:
    """Who is counted: the application the token was issued to, else its subject."""
    azp = principal.claims.get("azp")
    return azp if isinstance(azp, str) and azp else principal.subject


def client_key(prefix: str, endpoint: str, client: str) -> str:
    digest = hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{prefix}quota:{endpoint}:{digest}"


@dataclass
class _Client:
    """What this pod knows of one client's count in Redis, and what it has not counted yet."""

    unsent: int = 0  # admitted at once, not yet sent
    sending: int = 0  # admitted at once, sent, not yet answered
    # How many more this pod may admit at once, and until when (monotonic): its share of what
    # Redis last said was left, less those admitted since; it lapses when that count grows
    # stale or its window ends. Worked out when Redis answers, so admitting is a subtraction.
    credit: int = 0
    credit_until: float = float("-inf")
    window_ends: float = 0.0  # monotonic; a client whose window has ended may be forgotten
    waiters: list[asyncio.Future[tuple[int, float] | None]] = field(default_factory=list)

    def heard(self, limit: int, total: int, pods: int, now: float, seconds_left: float) -> None:
        """Redis's count of the client (`total`, by `pods` pods), with what this pod admitted
        since it was sent. One pod more than counted: a pod that joined since has a share too."""
        share = (limit - total) // (2 * (pods + 1))
        self.credit = share - self.unsent
        self.window_ends = now + seconds_left
        self.credit_until = min(now + _FRESH_SECONDS, self.window_ends)


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
        self._pod = secrets.token_hex(4)
        self._keys: dict[tuple[str, str], str] = {}  # (endpoint, client) -> its hashed key
        self._clients: dict[str, _Client] = {}
        self._due: set[str] = set()  # clients with counts to send or requests waiting
        self._sending: asyncio.Task[None] | None = None  # one call on its way at a time
        self._timer: asyncio.Handle | None = None
        self._timer_is_soon = False

    def admit(self, endpoint: str, principal: Principal) -> Awaitable[None] | None:
        """Counts this request: None when it is admitted at once, else what to await for its
        count, which raises a 429 APIError when the client is over its quota. Not a coroutine:
        the cached read's path creates no coroutine and takes no loop turn here."""
        client = client_of(principal)
        key = self._keys.get((endpoint, client)) or self._key(endpoint, client)
        if self._redis is None:
            self._judge(self._count_locally(key))
            return None
        state = self._clients.get(key) or self._remember(key)
        if state.credit > 0 and time.monotonic() < state.credit_until:
            state.credit -= 1
            if not state.unsent:  # the first since the last call: the next one must send it
                self._due.add(key)
                self._schedule(soon=False)
            state.unsent += 1
            return None
        self._due.add(key)
        return self._counted(state)

    async def _counted(self, state: _Client) -> None:
        self._judge(await self._wait_for_count(state))

    def _judge(self, counted: tuple[int, float] | None) -> None:
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

    def _key(self, endpoint: str, client: str) -> str:
        key = client_key(self._prefix, endpoint, client)
        if len(client) <= _MAX_REMEMBERED_ID:  # a hostile 20 kB id is hashed every time
            if len(self._keys) >= _MAX_CLIENTS:
                self._keys.clear()
            self._keys[endpoint, client] = key
        return key

    def _remember(self, key: str) -> _Client:
        if len(self._clients) >= _MAX_CLIENTS:
            self._forget_idle()
        state = self._clients[key] = _Client()
        return state

    async def _wait_for_count(self, state: _Client) -> tuple[int, float] | None:
        """(this request's count, seconds until the window ends), from the next call; None
        when Redis could not count it."""
        waiter: asyncio.Future[tuple[int, float] | None] = (
            asyncio.get_running_loop().create_future()
        )
        state.waiters.append(waiter)
        telemetry.add("userapi.quota.waits", 1)
        self._schedule(soon=True)
        # Shielded: a caller hanging up must not cancel the count for the others.
        return await asyncio.shield(waiter)

    def _schedule(self, soon: bool) -> None:
        """The next call: at the end of this loop turn when a request waits for it, else
        within FLUSH_SECONDS; never while one is on its way (its answer schedules the next)."""
        if self._sending is not None or (
            self._timer is not None and (self._timer_is_soon or not soon)
        ):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = (
            loop.call_soon(self._send) if soon else loop.call_later(FLUSH_SECONDS, self._send)
        )
        self._timer_is_soon = soon

    def _send(self) -> None:
        self._timer = None
        due, self._due = self._due, set()
        sent = []
        for key in due:
            client = self._clients[key]
            sent.append((key, client.unsent, client.waiters))
            client.sending, client.unsent, client.waiters = client.unsent, 0, []
        if sent:
            self._sending = asyncio.get_running_loop().create_task(self._run(sent))

    async def _run(
        self, sent: list[tuple[str, int, list[asyncio.Future[tuple[int, float] | None]]]]
    ) -> None:
        assert self._redis is not None
        keys = [key for key, _, _ in sent]
        args: list[str | int | float] = [self._window * 1000, self._pod]
        args += [at_once + len(waiters) for _, at_once, waiters in sent]
        result = None
        try:
            result = await self._redis.run_script(_SCRIPT, keys, args)
        finally:
            answered = isinstance(result, list) and len(result) == 2 * len(sent) + 1
            now = time.monotonic()
            for n, (key, _, waiters) in enumerate(sent):
                client = self._clients.get(key)  # forgotten meanwhile if none was admitted at once
                counts: list[tuple[int, float] | None] = [None] * len(waiters)
                if answered:
                    assert isinstance(result, list)
                    total, pods = int(result[2 * n]), int(result[2 * n + 1])
                    left = int(result[-1]) / 1000
                    if client is not None:
                        client.heard(self._requests, total, pods, now, left)
                    # Those admitted at once came first; the waiters take the last counts.
                    first = total - len(waiters) + 1
                    counts = [(first + i, left) for i in range(len(waiters))]
                if client is not None:
                    client.sending = 0
                for waiter, count in zip(waiters, counts, strict=True):
                    if not waiter.done():
                        waiter.set_result(count)
            self._sending = None
            if any(self._clients[key].waiters for key in self._due):
                self._schedule(soon=True)
            elif self._due:
                self._schedule(soon=False)

    def _forget_idle(self) -> None:
        """Room for new clients: those whose window has ended and that have nothing on its way
        go first, then every idle one."""
        now = time.monotonic()
        idle = [k for k, c in self._clients.items() if k not in self._due and not c.sending]
        ended = [k for k in idle if now >= self._clients[k].window_ends]
        for key in ended if len(ended) > _MAX_CLIENTS // 10 else idle:
            del self._clients[key]

    def _count_locally(self, key: str) -> tuple[int, float]:
        now = time.time()
        window = int(now // self._window)
        if window != self._local_window:
            self._local_window, self._local = window, {}
        self._local[key] = self._local.get(key, 0) + 1
        return self._local[key], (window + 1) * self._window - now
