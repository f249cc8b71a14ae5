"""One Management API rate budget for every pod: a token bucket in the shared Redis.

Auth0 limits a tenant, not a pod (a token bucket: Free 2/s, burst 2). Each pod spending the
budget as if alone turns a burst of misses across pods into a storm of 429s, so every call
takes a token from one bucket in Redis before it is sent (docs/architecture.md says why this is
a script of our own rather than a library). Waiting callers queue by priority: a single-user
read first, writes next, list/search last. The rule is strict across pods: no caller takes a
token while a caller of a higher priority, in any pod, is waiting for one. Only callers that
have asked are waiting: a read still on its way to the budget holds nobody back. Auth0's own
answers steer the bucket: a 429, or `X-RateLimit-Remaining: 0`, empties it until
`X-RateLimit-Reset`.

Redis down, each pod spends a local share: the rate and burst ÷ AUTH0_MANAGEMENT_EXPECTED_PODS.
Down means silent to this pod for a second (and two Redis timeouts), not one call timed out: a
slow Redis or a loaded pod still shares the one budget, and its callers wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import random
import secrets
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from userapi.platform import telemetry
from userapi.platform.errors import Auth0RateLimited

if TYPE_CHECKING:
    from userapi.adapters.shared_store import RedisStore
    from userapi.platform.settings import Settings

log = logging.getLogger("userapi.auth0.budget")


class BudgetSpent(Auth0RateLimited):
    """No token of the shared budget came within the request's time: nothing was sent."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(retry_after_seconds)
        self.args = (f"the Auth0 rate budget is spent, retry after {retry_after_seconds}s",)


class Priority(enum.IntEnum):
    """Who gets the next token when several wait; lower goes first."""

    READ = 0  # a single-user read that missed the cache: someone waits on one profile
    WRITE = 1
    LIST = 2  # list/search: costly, and a caller can page again later


_LABELS = {
    (priority, scope): {"userapi.priority": priority.name.lower(), "userapi.budget": scope}
    for priority in Priority
    for scope in ("shared", "local")
}
_HOLD_CAP_SECONDS = 60.0  # an X-RateLimit-Reset further away than this is not believed

# How long a waiter's place in the queue outlives the poll it announced. It only matters when
# the waiter never comes back to take or leave (its pod died): then lower priorities wait this
# much longer than they had to. Too short and a waiter that is merely late (a loaded pod whose
# event loop ran other requests first) loses its place, and a lower priority takes the token
# it was waiting for (docs/architecture.md, "Priority").
_LEASE_GRACE_MS = 2000
_JITTER_CAP_SECONDS = 0.25  # well inside the grace: jitter alone never loses a waiter's place

# A take that failed may still have happened in Redis, and a Redis that is only slow (a loaded
# pod, a stalled server) still serves the other pods: spending a local share then would be a
# second budget (a loaded bench run reached 5-6 calls/s of 2, with 429s, when one timeout
# was enough). So the local share starts only after Redis has answered this pod nothing for
# this long (or two of its timeouts, if longer); until then a failed take is a short wait.
_DOWN_AFTER_SECONDS = 1.0
_RETRY_UNANSWERED_SECONDS = 0.1

# KEYS: the bucket (a hash), then one sorted set of waiters per priority, highest first.
# ARGV: op ('take', 'leave', 'hold'), rate per second, burst, priority, waiter id, hold-until
# (UNIX ms, op 'hold'), '1' when the caller will wait if no token is free ('0': it has a stale
# answer to give instead, so it registers nowhere and holds nobody back).
# A waiter is a member of its priority's set, scored with the end of its lease: its next poll
# plus the grace. A token goes to a caller only if no caller of a higher priority holds a live
# lease, in any pod. A waiter that gives up leaves at once; one that is granted, too.
# Time is Redis's own clock, so pods with skewed clocks still share one bucket. Returns
# {1, 0} when a token was taken, else {0, ms until the next poll makes sense}.
_SCRIPT = (
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local waiters = KEYS[2 + tonumber(ARGV[4])]
if ARGV[1] == 'leave' then
  redis.call('ZREM', waiters, ARGV[5])
  return {1, 0}
end
local rate = tonumber(ARGV[2]) / 1000
local burst = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'hold')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
local hold = tonumber(state[3]) or 0
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local result = {1, 0}
if ARGV[1] == 'hold' then
  hold = math.max(hold, tonumber(ARGV[6]))
  tokens = 0
else
  local priority = tonumber(ARGV[4])
  local ahead = 0
  for p = 0, priority - 1 do
    redis.call('ZREMRANGEBYSCORE', KEYS[2 + p], '-inf', now)
    ahead = ahead + redis.call('ZCARD', KEYS[2 + p])
  end
  if now >= hold and ahead == 0 and tokens >= 1 then
    tokens = tokens - 1
    redis.call('ZREM', waiters, ARGV[5])
  else
    local wait = math.max(math.ceil((1 - tokens) / rate), 1)
    if ahead > 0 then wait = math.max(wait, math.ceil(0.5 / rate)) end
    if hold > now then wait = math.max(wait, hold - now) end
    if ARGV[7] == '1' then
      redis.call('ZADD', waiters, now + wait + GRACE, ARGV[5])
      -- The set lives as long as its longest lease: a shorter one must not cut the others.
      local last = redis.call('ZRANGE', waiters, -1, -1, 'WITHSCORES')
      redis.call('PEXPIREAT', waiters, tonumber(last[2]) + 1000)
    end
    result = {0, wait}
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now, 'hold', hold)
redis.call('PEXPIRE', KEYS[1], math.max(hold - now, 0) + math.ceil(burst / rate) + 1000)
return result
"""
).replace("GRACE", str(_LEASE_GRACE_MS))


_impatient: ContextVar[bool] = ContextVar("userapi_budget_impatient", default=False)


@contextlib.contextmanager
def impatient() -> Iterator[None]:
    """Calls in this block take a token only if one is free at once: the caller has a stale
    answer to give instead of waiting (domain/profile_cache.py)."""
    reset = _impatient.set(True)
    try:
        yield
    finally:
        _impatient.reset(reset)


class _LocalBucket:
    """This pod's share while Redis is unreachable: the same rules, in memory."""

    def __init__(self, per_second: float, burst: float) -> None:
        self.per_second = per_second
        self.burst = burst
        self._tokens = burst
        self._at = time.monotonic()
        self._hold_until = 0.0  # monotonic
        self.waiting = dict.fromkeys(Priority, 0)

    def take(self, priority: Priority) -> float:
        """0 when a token was taken, else seconds until the next try makes sense."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        ahead = any(self.waiting[p] for p in Priority if p < priority)
        if now >= self._hold_until and not ahead and self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        wait = max((1 - self._tokens) / self.per_second, 0.001)
        if ahead:
            wait = max(wait, 0.5 / self.per_second)
        return max(wait, self._hold_until - now)

    def drain(self) -> None:
        self._tokens, self._at = 0.0, time.monotonic()

    def hold(self, seconds: float) -> None:
        self._tokens = 0.0
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)


class RateBudget:
    """Takes a token from the shared budget before each Management API call."""

    def __init__(self, settings: Settings, redis: RedisStore | None) -> None:
        assert settings.auth0_management_rate_per_second is not None
        self._rate = settings.auth0_management_rate_per_second
        self._burst = settings.auth0_management_burst or math.ceil(self._rate)
        self._redis = redis
        prefix = f"{settings.redis_key_prefix}auth0:budget:{settings.auth0_domain}"
        self._keys = [prefix, *(f"{prefix}:waiting:{p.value}" for p in Priority)]
        pods = settings.auth0_management_expected_pods
        self._local = _LocalBucket(self._rate / pods, max(1.0, self._burst / pods))
        self._on_local = redis is None  # with no Redis at all, the local share is the budget
        self._down_after = max(_DOWN_AFTER_SECONDS, 2 * settings.redis_timeout_seconds)
        self._shared = "local" if redis is None else "shared"
        self._leaving: set[asyncio.Task[Any]] = set()

    async def acquire(self, priority: Priority, remaining: float) -> None:
        """Wait for a token for up to `remaining` seconds (none if the caller is impatient);
        raises BudgetSpent (a 503 with Retry-After) when none comes in time."""
        deadline = time.monotonic() + remaining
        waiter = secrets.token_hex(8)
        patient = not _impatient.get()
        queued = False  # registered in the shared queue: it must leave if it goes ungranted
        waited = False
        scope = self._shared
        self._local.waiting[priority] += 1
        try:
            while True:
                wait, scope = await self._take(priority, waiter, patient)
                if wait == 0:
                    telemetry.add("userapi.auth0.budget.granted", 1, _LABELS[priority, scope])
                    return
                queued = queued or (patient and scope == "shared")
                if not waited:
                    waited = True
                    telemetry.add("userapi.auth0.budget.waits", 1, _LABELS[priority, scope])
                if not patient or wait >= deadline - time.monotonic():
                    telemetry.add("userapi.auth0.budget.exhausted", 1, _LABELS[priority, scope])
                    raise BudgetSpent(max(1, math.ceil(wait)))
                # Jitter: pods that polled together do not all come back at the same instant.
                jitter = min(0.2 / self._rate, _JITTER_CAP_SECONDS)
                await asyncio.sleep(wait + random.uniform(0, jitter))
        except BaseException:
            if queued:
                self._leave(priority, waiter)
            raise
        finally:
            self._local.waiting[priority] -= 1

    async def hold(self, reset_at: float | None) -> None:
        """Auth0 said its bucket is empty (a 429, or X-RateLimit-Remaining: 0): nobody sends
        until `reset_at` (UNIX seconds; one second from now when Auth0 did not say)."""
        now = time.time()
        until = min(reset_at if reset_at is not None else now + 1, now + _HOLD_CAP_SECONDS)
        if until <= now:
            return
        telemetry.add("userapi.auth0.budget.holds", 1)
        self._local.hold(until - now)
        if self._redis is not None:
            args: list[str | int | float] = [
                "hold",
                self._rate,
                self._burst,
                0,
                "",
                int(until * 1000),
                "0",
            ]
            await self._redis.run_script(_SCRIPT, self._keys, args)

    def _leave(self, priority: Priority, waiter: str) -> None:
        """Gives up a place in the shared queue (refused, or the request went away): lower
        priorities need not wait for its lease to end. A task of its own, so that it is sent
        even from a cancelled request."""
        assert self._redis is not None
        args: list[str | int | float] = ["leave", self._rate, self._burst, int(priority), waiter]
        task = asyncio.get_running_loop().create_task(
            self._redis.run_script(_SCRIPT, self._keys, args)
        )
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def _take(self, priority: Priority, waiter: str, patient: bool) -> tuple[float, str]:
        if self._redis is not None:
            args: list[str | int | float] = [
                "take",
                self._rate,
                self._burst,
                int(priority),
                waiter,
                0,
                "1" if patient else "0",
            ]
            result = await self._redis.run_script(_SCRIPT, self._keys, args)
            if isinstance(result, list) and len(result) == 2:
                if self._on_local:
                    self._on_local = False
                    log.warning("Redis answers again: the shared Auth0 rate budget is back")
                return (0.0 if result[0] == 1 else int(result[1]) / 1000), "shared"
            if not self._on_local:
                if self._redis.failing_for() < self._down_after:
                    return _RETRY_UNANSWERED_SECONDS, "shared"
                self._on_local = True
                # From empty: tokens the share gathered while the shared budget was in use
                # would be spent on top of it.
                self._local.drain()
                log.warning(
                    "Redis unreachable: this pod spends its local share of the Auth0 budget",
                    extra={"per_second": self._local.per_second, "burst": self._local.burst},
                )
        return self._local.take(priority), "local"
