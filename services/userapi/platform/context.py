"""Per-request facts that the access log reports, filled in by whichever layer learns them."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class RequestContext:
    # The caller's X-Request-Id when it is sane, else server_request_id: what the response, the
    # error body and the log lines name.
    request_id: str
    # Made by this process for every request: a record that must identify the request (the
    # audit trail) never rests on an id the caller chose and may reuse or forge.
    server_request_id: str = ""
    cache: str | None = None  # hit | miss | stale | coalesced (profiles.Lookup)
    auth0_ms: float = 0.0
    auth0_calls: int = 0
    subject: str | None = None

    def __post_init__(self) -> None:
        if not self.server_request_id:
            self.server_request_id = self.request_id

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


def server_request_id() -> str:
    ctx = _current.get()
    return ctx.server_request_id if ctx is not None else "-"
