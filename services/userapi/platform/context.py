"""Per-request facts that the access log reports, filled in by whichever layer learns them."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestContext:
    request_id: str
    cache: str | None = None  # hit | miss | stale | coalesced (profiles.Lookup)
    auth0_ms: float = 0.0
    auth0_calls: int = 0
    subject: str | None = None

    def add_auth0_time(self, seconds: float) -> None:
        self.auth0_ms += seconds * 1000.0
        self.auth0_calls += 1


_current: ContextVar[RequestContext | None] = ContextVar("userapi_request", default=None)


def current() -> RequestContext | None:
    return _current.get()


def bind(ctx: RequestContext) -> object:
    return _current.set(ctx)


def reset(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def request_id() -> str:
    ctx = _current.get()
    return ctx.request_id if ctx is not None else "-"
