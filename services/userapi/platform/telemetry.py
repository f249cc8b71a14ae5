"""The one seam between userapi and OpenTelemetry (docs/observability.md).

The runtime calls the functions here at each point worth seeing: the request, token
verification, the cache, every Auth0 attempt, Redis, PostgreSQL, the idempotency claim. With
telemetry off (no OTLP endpoint, or OTEL_SDK_DISABLED=true) each is a global read and a shared
no-op, and no OpenTelemetry module is ever imported; `configure` switches them to
platform/otel.py, which holds everything that knows the SDK.

What may go into an attribute is decided here, by the callers' choice of values: routes as
templates, operations by name, outcomes from a short fixed list. Never a token, an email, a
password, a user id or a SQL parameter.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from starlette.types import Scope

    from userapi.platform.settings import Settings

AttributeValue = str | bool | int | float
Attributes = Mapping[str, AttributeValue]
SpanKindName = Literal["internal", "client", "server"]

_IMPORTED_AT = time.monotonic()  # the start-up fallback where /proc is missing


class Span(Protocol):
    def set(self, key: str, value: AttributeValue) -> None: ...

    def outcome(self, outcome: str) -> None:
        """A short word for how the operation ended (hit, ok, rate_limited...): an attribute of
        the span and a label of its duration metric."""

    def fail(self, error_type: str) -> None:
        """Marks the span as an error (`error.type`); an exception leaving the span does too."""


class Request(Protocol):
    """The server side of one request: its span is current until `end`."""

    def end(self, status: int, route: str | None, auth0_seconds: float) -> None: ...


class Recorder(Protocol):
    """What platform/otel.py implements."""

    def span(self, name: str, kind: SpanKindName, attributes: Attributes | None) -> SpanScope: ...

    def operation(
        self, system: str, operation: str, name: str, attributes: Attributes | None
    ) -> SpanScope: ...

    def request(self, scope: Scope) -> Request: ...

    def add(self, instrument: str, value: float, attributes: Attributes) -> None: ...

    def ready(self, seconds: float) -> None: ...

    def observe_pool(self, name: str, sizes: Callable[[], tuple[int, int]]) -> None: ...

    def annotate(self, key: str, value: AttributeValue) -> None: ...

    def trace_ids(self) -> tuple[str, str] | None: ...

    def shutdown(self) -> None: ...


class SpanScope(Protocol):
    """What `with` gets from span() and operation()."""

    def __enter__(self) -> Span: ...

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None: ...


class _Off:
    """The span, the scope and the request of telemetry off: one shared object doing nothing."""

    __slots__ = ()

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        return None

    def set(self, key: str, value: AttributeValue) -> None:
        pass

    def outcome(self, outcome: str) -> None:
        pass

    def fail(self, error_type: str) -> None:
        pass

    def end(self, status: int, route: str | None, auth0_seconds: float) -> None:
        pass


OFF = _Off()
_recorder: Recorder | None = None


def enabled() -> bool:
    return _recorder is not None


def span(
    name: str, attributes: Attributes | None = None, *, kind: SpanKindName = "internal"
) -> SpanScope:
    """A span around a step of the request (`with telemetry.span(...) as s:`)."""
    recorder = _recorder
    return OFF if recorder is None else recorder.span(name, kind, attributes)


def operation(
    system: Literal["redis", "postgresql", "auth0"],
    operation: str,
    *,
    name: str | None = None,
    attributes: Attributes | None = None,
) -> SpanScope:
    """A client span around one call to a backing service, and its duration in that service's
    histogram (labelled by operation, outcome or error type). `operation` must be a template
    or a command name, never a value."""
    recorder = _recorder
    if recorder is None:
        return OFF
    return recorder.operation(system, operation, name or operation, attributes)


def query(sql: str) -> SpanScope:
    """A PostgreSQL statement: its span (db.query.text is `sql`, which holds only $n
    placeholders, never a value) and its duration by db.operation.name, its first keyword."""
    recorder = _recorder
    if recorder is None:
        return OFF
    operation = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "UNKNOWN"
    return recorder.operation("postgresql", operation, operation, {"db.query.text": sql})


def request(scope: Scope) -> Request:
    """The server span of one request, continuing the caller's traceparent."""
    recorder = _recorder
    return OFF if recorder is None else recorder.request(scope)


def add(instrument: str, value: float = 1, attributes: Attributes | None = None) -> None:
    """A count (or a last value, for the gauges) on one of INSTRUMENTS."""
    recorder = _recorder
    if recorder is not None:
        recorder.add(instrument, value, attributes or {})


def annotate(key: str, value: AttributeValue) -> None:
    """An attribute of the current span (the request's, on the cached path): a step that took
    no time worth a span of its own (a remembered token, the process's own copy) is still in
    the trace, at the cost of an attribute instead of a span built, ended and exported."""
    recorder = _recorder
    if recorder is not None:
        recorder.annotate(key, value)


def observe_pool(name: str, sizes: Callable[[], tuple[int, int]]) -> None:
    """Report a connection pool's (in use, idle) whenever metrics are collected."""
    recorder = _recorder
    if recorder is not None:
        recorder.observe_pool(name, sizes)


def trace_ids() -> tuple[str, str] | None:
    recorder = _recorder
    return None if recorder is None else recorder.trace_ids()


@contextlib.contextmanager
def sdk_hidden() -> Iterator[None]:
    """While telemetry is off, imports made inside find no OpenTelemetry SDK.

    redis-py (8.x) imports `opentelemetry.sdk.metrics` with itself whenever the SDK is
    installed, for a metrics feature of its own that userapi never turns on (it measures Redis
    at its own seam, `operation`): about 20 ms of every cold start, measured with
    `python -X importtime` (docs/performance.md). A None in sys.modules is Python's way to make
    an import fail; the library then takes the path it takes without the SDK. Once telemetry
    is on, or the SDK already loaded, nothing is hidden.
    """
    sdk = "opentelemetry.sdk"
    hide = _recorder is None and sdk not in sys.modules
    if hide:
        sys.modules[sdk] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if hide and sys.modules.get(sdk, ...) is None:
            del sys.modules[sdk]


# name: (kind, unit, description). platform/otel.py creates them; docs/observability.md lists them.
INSTRUMENTS: dict[str, tuple[str, str, str]] = {
    "http.server.request.duration": (
        "histogram",
        "s",
        "Each request, by http.request.method, http.route and http.response.status_code.",
    ),
    "userapi.request.auth0.duration": (
        "histogram",
        "s",
        "Per request that called Auth0, the time spent in those calls (by http.route): Auth0"
        " seconds, the cost.",
    ),
    "userapi.auth0.call.duration": (
        "histogram",
        "s",
        "Each HTTP attempt at Auth0, by userapi.auth0.operation and userapi.outcome.",
    ),
    "userapi.auth0.retries": ("counter", "{retry}", "Auth0 attempts retried, by reason."),
    "userapi.auth0.rate_limited": ("counter", "{response}", "Auth0 429 answers, by operation."),
    "userapi.auth0.rate_limit.remaining": (
        "gauge",
        "{request}",
        "X-RateLimit-Remaining of Auth0's last answer, by operation.",
    ),
    "userapi.auth0.rate_limit.limit": (
        "gauge",
        "{request}",
        "X-RateLimit-Limit of Auth0's last answer, by operation.",
    ),
    "userapi.auth0.budget.granted": (
        "counter",
        "{token}",
        "Tokens of the Auth0 rate budget taken, by userapi.priority and userapi.budget"
        " (shared, or local while Redis is unreachable).",
    ),
    "userapi.auth0.budget.waits": (
        "counter",
        "{call}",
        "Management API calls that waited for a budget token, by userapi.priority and"
        " userapi.budget.",
    ),
    "userapi.auth0.budget.exhausted": (
        "counter",
        "{call}",
        "Calls refused because no budget token came within the time budget (a 503, or a stale"
        " answer), by userapi.priority and userapi.budget.",
    ),
    "userapi.auth0.budget.stale_served": (
        "counter",
        "{read}",
        "Stale profiles answered at once because the budget had no token free.",
    ),
    "userapi.auth0.budget.holds": (
        "counter",
        "{hold}",
        "Times Auth0's answer (a 429, X-RateLimit-Remaining 0) stopped the budget until its"
        " X-RateLimit-Reset.",
    ),
    "userapi.quota.rejected": (
        "counter",
        "{request}",
        "Requests refused with 429 because their client was over its quota (by endpoint only:"
        " never a client id).",
    ),
    "userapi.quota.waits": (
        "counter",
        "{request}",
        "Quota checks that waited for their own count in Redis (the first of a window, a client"
        " near its limit, a count heard too long ago): one round trip added to the request.",
    ),
    "userapi.quota.unchecked": (
        "counter",
        "{request}",
        "Requests let through unchecked because Redis did not answer the quota check.",
    ),
    "userapi.cache.lookups": (
        "counter",
        "{lookup}",
        "Profile and JWKS cache reads, by userapi.cache and userapi.outcome.",
    ),
    "db.client.operation.duration": (
        "histogram",
        "s",
        "Each Redis or PostgreSQL call, by db.system.name, db.operation.name and error.type.",
    ),
    "db.client.connection.count": (
        "updown",
        "{connection}",
        "The database pool's connections, by db.client.connection.state (used, idle).",
    ),
    "userapi.startup.duration": (
        "histogram",
        "s",
        "Cold start: from the process's start to ready to serve, once per process.",
    ),
    "userapi.cold_request.duration": (
        "histogram",
        "s",
        "Cold start: the first request a process serves, by http.route and status.",
    ),
}


def process_age_seconds() -> float:
    """How long this process has existed: from /proc (Linux counts it from the fork, so the
    interpreter's own start is included), else from this module's import."""
    try:
        with open("/proc/self/stat", "rb") as stat_file:
            stat = stat_file.read()
        with open("/proc/uptime", "rb") as uptime_file:
            uptime = float(uptime_file.read().split()[0])
        # Fields after the parenthesised command name; starttime is field 22 of the whole line.
        start_ticks = int(stat.rsplit(b")", 1)[1].split()[19])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED_AT


def configure(settings: Settings, endpoint: str) -> bool:
    """Turn telemetry on for this process when an OTLP endpoint is configured; True if on."""
    global _recorder
    if _recorder is not None:  # a second app in one process (tests): the new settings win
        _recorder.shutdown()
        _recorder = None
    if settings.otlp_endpoint("traces") is None and settings.otlp_endpoint("metrics") is None:
        return False
    from userapi.platform import logs, otel

    _recorder = otel.OTelRecorder(settings, endpoint, INSTRUMENTS)
    logs.trace_ids = trace_ids
    return True


def ready() -> None:
    """The process is ready to serve: its cold start so far goes on record."""
    recorder = _recorder
    if recorder is not None:
        recorder.ready(process_age_seconds())


def shutdown() -> None:
    """Flush what is buffered (blocking: call it off the event loop) and stop exporting."""
    global _recorder
    recorder, _recorder = _recorder, None
    if recorder is not None:
        from userapi.platform import logs

        logs.trace_ids = None
        recorder.shutdown()
