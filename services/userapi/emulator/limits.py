"""Auth0's rate limiting (a token bucket with x-ratelimit-* headers), plus fault injection."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal["status", "hang"]
FAULT_KINDS: tuple[FaultKind, ...] = ("status", "hang")


class TokenBucket:
    def __init__(self, burst: int, per_second: float) -> None:
        if burst < 1 or per_second < 0:
            raise ValueError("burst must be >= 1 and per_second >= 0")
        self.burst = burst
        self.per_second = per_second
        self._tokens = float(burst)
        self._updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now

    def fill(self) -> None:
        self._tokens = float(self.burst)
        self._updated = time.monotonic()

    def take(self) -> tuple[bool, dict[str, str]]:
        """Consume one token if there is one; the headers Auth0 sends either way."""
        self._refill()
        allowed = self._tokens >= 1
        if allowed:
            self._tokens -= 1
        return allowed, self._headers()

    def headers(self) -> dict[str, str]:
        """The current x-ratelimit-* headers without consuming a token."""
        self._refill()
        return self._headers()

    def _headers(self) -> dict[str, str]:
        # x-ratelimit-reset: UNIX seconds when the next token is added (whole seconds, like Auth0).
        missing = max(0.0, 1 - self._tokens)
        wait = missing / self.per_second if self.per_second else 3600.0
        return {
            "x-ratelimit-limit": str(self.burst),
            "x-ratelimit-remaining": str(max(0, math.floor(self._tokens))),
            "x-ratelimit-reset": str(math.ceil(time.time() + wait)),
        }


@dataclass
class Fault:
    """The next `times` requests to `route` (a route name or "*") fail this way."""

    route: str = "*"
    kind: FaultKind = "status"
    status: int = 503
    times: int | None = None  # None: until cleared
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
        if not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or null")

    def matches(self, route: str) -> bool:
        return self.route in ("*", route) and (self.times is None or self.times > 0)


class Faults:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def active(self) -> list[Fault]:
        return [f for f in self._faults if f.times is None or f.times > 0]

    def take(self, route: str) -> Fault | None:
        """The first matching fault, used up once; faults apply in the order they were added."""
        for fault in self._faults:
            if fault.matches(route):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None
