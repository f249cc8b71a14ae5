"""Auth0's rate limiting (a token bucket with x-ratelimit-* headers), plus fault injection."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any


class TokenBucket:
    def __init__(self, burst: int, per_second: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self._tokens = float(burst)
        self._updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_second)
        self._updated = now

    def take(self) -> tuple[bool, dict[str, str]]:
        """Consume one token if there is one; the headers Auth0 sends either way."""
        self._refill()
        allowed = self._tokens >= 1
        if allowed:
            self._tokens -= 1
        # x-ratelimit-reset: UNIX seconds when the next token is added (whole seconds, like Auth0).
        missing = max(0.0, 1 - self._tokens)
        reset = math.ceil(time.time() + missing / self.per_second) if self.per_second else 0
        return allowed, {
            "x-ratelimit-limit": str(self.burst),
            "x-ratelimit-remaining": str(max(0, math.floor(self._tokens))),
            "x-ratelimit-reset": str(reset),
        }


@dataclass
class Fault:
    route: str  # a route name, or "*"
    kind: str  # "status" | "hang"
    status: int = 503
    times: int | None = None  # None: until cleared
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    def matches(self, route: str) -> bool:
        return self.route in ("*", route) and (self.times is None or self.times > 0)


class Faults:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.kind not in ("status", "hang"):
            raise ValueError("kind must be 'status' or 'hang'")
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def take(self, route: str) -> Fault | None:
        for fault in self._faults:
            if fault.matches(route):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None
