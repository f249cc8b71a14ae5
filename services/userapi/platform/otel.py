"""Telemetry on: platform/telemetry.py's calls as OpenTelemetry spans and metrics, exported over
OTLP/HTTP. The only userapi module that imports OpenTelemetry; imported only when it is on.

Spans and metrics are written by hand at userapi's own seams rather than by the
instrumentation libraries for ASGI, httpx, redis and asyncpg: those name a user id or an email
inside URLs and keys, cannot tell a retry from a new call, and cost a wrapper per call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.re import parse_env_headers
from starlette.types import Scope

from userapi import __version__
from userapi.platform.settings import Settings

# platform/telemetry.py's types, restated: it imports this module, never the other way round.
AttributeValue = str | bool | int | float
Attributes = Mapping[str, AttributeValue]
SpanKindName = Literal["internal", "client", "server"]
Instruments = Mapping[str, tuple[str, str, str]]

_KINDS = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT, "server": SpanKind.SERVER}
_PROPAGATOR = TraceContextTextMapPropagator()
# Seconds. Semantic conventions' HTTP buckets, with 1 and 2.5 ms added for cache hits and Redis.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)
_STARTUP_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)


def sampler(settings: Settings) -> Sampler:
    name, ratio = settings.otel_traces_sampler, settings.otel_traces_sampler_arg
    root: Sampler = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
    }[name.removeprefix("parentbased_")]
    return ParentBased(root) if name.startswith("parentbased_") else root


def resource(settings: Settings, endpoint: str) -> Resource:
    attributes: dict[str, AttributeValue] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "service.version": __version__,
        "service.instance.id": str(uuid.uuid4()),
        "userapi.endpoint": endpoint,
    }
    attributes.update(parse_env_headers(settings.otel_resource_attributes, liberal=True))
    attributes["service.name"] = settings.otel_service_name
    return Resource(attributes)


def _headers(settings: Settings) -> dict[str, str]:
    raw = settings.otel_exporter_otlp_headers
    return dict(parse_env_headers(raw.get_secret_value(), liberal=True)) if raw is not None else {}


class _LazySpanExporter(SpanExporter):
    """The OTLP span exporter, imported at its first export on the export thread: requests and
    protobuf stay out of the cold start (docs/performance.md)."""

    def __init__(self, endpoint: str, headers: dict[str, str], timeout: float) -> None:
        self._arguments = (endpoint, headers, timeout)
        self._exporter: SpanExporter | None = None

    def _load(self) -> SpanExporter:
        if self._exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint, headers, timeout = self._arguments
            self._exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=timeout)
        return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._load().export(spans)

    def shutdown(self) -> None:
        if self._exporter is not None:
            self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _LazyMetricExporter(MetricExporter):
    """The OTLP metric exporter, imported at its first export (cumulative temporality, the
    OTLP exporter's default and what Prometheus needs)."""

    def __init__(self, endpoint: str, headers: dict[str, str], timeout: float) -> None:
        super().__init__()
        self._arguments = (endpoint, headers, timeout)
        self._exporter: MetricExporter | None = None

    def _load(self) -> MetricExporter:
        if self._exporter is None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            endpoint, headers, timeout = self._arguments
            self._exporter = OTLPMetricExporter(endpoint=endpoint, headers=headers, timeout=timeout)
        return self._exporter

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return self._load().export(metrics_data, timeout_millis=timeout_millis)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._exporter is not None:
            self._exporter.shutdown(timeout_millis=timeout_millis)


# A child of a trace that was not sampled: never exported, so never built (no sampler call, no
# context switch). Every sampler userapi offers decides by the trace (its parent's flag, or the
# trace id's ratio), so a child of an unsampled trace would not be sampled either.
_DROPPED = trace.INVALID_SPAN


def _sampled_out() -> bool:
    context = trace.get_current_span().get_span_context()
    return context.is_valid and not context.trace_flags.sampled


class _SpanScope:
    """A span made current for a `with` block; an exception leaving it marks it an error."""

    __slots__ = ("_error", "_outcome", "_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token: object = None
        self._outcome: str | None = None
        self._error: str | None = None

    def __enter__(self) -> _SpanScope:
        if self._span is not _DROPPED:
            self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and self._error is None:
            self.fail(exc_type.__qualname__)
        if self._span is not _DROPPED:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._span.end()

    def set(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def outcome(self, outcome: str) -> None:
        self._outcome = outcome
        self._span.set_attribute("userapi.outcome", outcome)

    def fail(self, error_type: str) -> None:
        # The type only: an exception's message may quote what Auth0 or a caller sent.
        self._error = error_type
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR))


class _Operation(_SpanScope):
    """A client span that also records its duration in its service's histogram."""

    __slots__ = ("_attributes", "_histogram", "_started")

    def __init__(self, span: trace.Span, histogram: Any, attributes: dict[str, Any]) -> None:
        super().__init__(span)
        self._histogram = histogram
        self._attributes = attributes
        self._started = 0.0

    def __enter__(self) -> _Operation:
        self._started = time.perf_counter()
        super().__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        elapsed = time.perf_counter() - self._started
        super().__exit__(exc_type, *exc)
        attributes = self._attributes
        if self._outcome is not None:
            attributes["userapi.outcome"] = self._outcome
        if self._error is not None:
            attributes["error.type"] = self._error
            attributes.setdefault("userapi.outcome", "error")
        self._histogram.record(elapsed, attributes)


class _Request:
    """The server span of one request (continuing a traceparent) and its metrics."""

    __slots__ = ("_cold", "_method", "_recorder", "_span", "_started", "_token")

    def __init__(self, recorder: OTelRecorder, scope: Scope) -> None:
        carrier: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            if name == b"traceparent" or name == b"tracestate":
                carrier[name.decode("latin-1")] = value.decode("latin-1")
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        method: str = scope.get("method", "GET")
        self._recorder = recorder
        self._method = method
        self._cold = recorder.take_cold()
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.scheme": scope.get("scheme", "http"),
        }
        if self._cold:
            attributes["faas.coldstart"] = True
        self._span = recorder.tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span, parent))
        self._started = time.perf_counter()

    def end(self, status: int, route: str | None, auth0_seconds: float) -> None:
        elapsed = time.perf_counter() - self._started
        span = self._span
        span.set_attribute("http.response.status_code", status)
        labels: dict[str, Any] = {
            "http.request.method": self._method,
            "http.response.status_code": status,
        }
        if route is not None:
            span.update_name(f"{self._method} {route}")
            span.set_attribute("http.route", route)
            labels["http.route"] = route
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
            labels["error.type"] = str(status)
        otel_context.detach(self._token)
        span.end()
        recorder = self._recorder
        recorder.record("http.server.request.duration", elapsed, labels)
        by_route = {"http.route": route} if route is not None else {}
        if auth0_seconds:  # a zero adds nothing to the cost's sum: a cached read skips it
            recorder.record("userapi.request.auth0.duration", auth0_seconds, by_route)
        if self._cold:
            recorder.record("userapi.cold_request.duration", elapsed, labels)


class OTelRecorder:
    def __init__(self, settings: Settings, endpoint: str, instruments: Instruments) -> None:
        self._endpoint = endpoint
        self._cold = True
        headers = _headers(settings)
        timeout = settings.otel_exporter_otlp_timeout / 1000
        own_resource = resource(settings, endpoint)

        self._tracer_provider = TracerProvider(
            sampler=sampler(settings), resource=own_resource, shutdown_on_exit=False
        )
        traces_url = settings.otlp_endpoint("traces")
        if traces_url is not None:
            self._tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    _LazySpanExporter(traces_url, headers, timeout),
                    max_queue_size=settings.otel_bsp_max_queue_size,
                    schedule_delay_millis=settings.otel_bsp_schedule_delay,
                )
            )
        self.tracer = self._tracer_provider.get_tracer("userapi", __version__)

        metrics_url = settings.otlp_endpoint("metrics")
        readers = []
        if metrics_url is not None:
            readers.append(
                PeriodicExportingMetricReader(
                    _LazyMetricExporter(metrics_url, headers, timeout),
                    export_interval_millis=settings.otel_metric_export_interval,
                )
            )
        self._meter_provider = MeterProvider(
            metric_readers=readers,
            resource=own_resource,
            shutdown_on_exit=False,
            # Exemplars (a sampled trace id kept per bucket) cost each record a look at the
            # current span and a reservoir update; the traces are found by route and time.
            exemplar_filter=AlwaysOffExemplarFilter(),
        )
        meter = self._meter_provider.get_meter("userapi", __version__)
        self._pools: list[tuple[str, Callable[[], tuple[int, int]]]] = []
        self._instruments: dict[str, Any] = {}
        # Counters are summed here and read by the SDK at each collection (an observable
        # counter: the same cumulative sum on the wire). A counter's add() through the SDK
        # cleaned and hashed its attributes on every call, 10-25 µs, and a cached read adds
        # one (its cache outcome); here it is a dict update.
        self._totals: dict[str, dict[tuple[tuple[str, Any], ...], float]] = {}
        for name, (kind, unit, description) in instruments.items():
            if kind == "histogram":
                buckets = _STARTUP_BUCKETS if name.startswith("userapi.startup") else _BUCKETS
                instrument: Any = meter.create_histogram(
                    name, unit, description, explicit_bucket_boundaries_advisory=buckets
                )
            elif kind == "counter":
                totals = self._totals[name] = {}
                instrument = meter.create_observable_counter(
                    name, [self._observer(totals)], unit, description
                )
            elif kind == "gauge":
                instrument = meter.create_gauge(name, unit, description)
            else:
                instrument = meter.create_observable_up_down_counter(
                    name, [self._observe_pools], unit, description
                )
            self._instruments[name] = instrument

    # --- platform/telemetry.py's Recorder ----------------------------------------------------

    def span(self, name: str, kind: SpanKindName, attributes: Attributes | None) -> _SpanScope:
        if _sampled_out():
            return _SpanScope(_DROPPED)
        return _SpanScope(self.tracer.start_span(name, kind=_KINDS[kind], attributes=attributes))

    def operation(
        self, system: str, operation: str, name: str, attributes: Attributes | None
    ) -> _Operation:
        span_attributes: dict[str, Any] = dict(attributes or {})
        if system == "auth0":
            histogram = self._instruments["userapi.auth0.call.duration"]
            labels: dict[str, Any] = {"userapi.auth0.operation": operation}
        else:
            histogram = self._instruments["db.client.operation.duration"]
            labels = {"db.system.name": system, "db.operation.name": operation}
            span_attributes.update(labels)
        labels["userapi.endpoint"] = self._endpoint
        if _sampled_out():
            return _Operation(_DROPPED, histogram, labels)
        span = self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=span_attributes)
        return _Operation(span, histogram, labels)

    def request(self, scope: Scope) -> _Request:
        return _Request(self, scope)

    def add(self, instrument: str, value: float, attributes: Attributes) -> None:
        totals = self._totals.get(instrument)
        if totals is not None:
            key = tuple(attributes.items())
            totals[key] = totals.get(key, 0) + value
            return
        labels = {**attributes, "userapi.endpoint": self._endpoint}
        self._instruments[instrument].set(value, labels)  # a gauge

    def _observer(
        self, totals: dict[tuple[tuple[str, Any], ...], float]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            # On the reader's thread: list() copies the items under the GIL in one C call, so
            # an add() on the event loop meanwhile cannot break the iteration.
            for key, total in list(totals.items()):
                yield Observation(total, {**dict(key), "userapi.endpoint": self._endpoint})

        return observe

    def record(self, instrument: str, value: float, attributes: dict[str, Any]) -> None:
        attributes["userapi.endpoint"] = self._endpoint
        self._instruments[instrument].record(value, attributes)

    def ready(self, seconds: float) -> None:
        self.record("userapi.startup.duration", seconds, {})

    def take_cold(self) -> bool:
        cold, self._cold = self._cold, False  # one event loop: no lock needed
        return cold

    def observe_pool(self, name: str, sizes: Callable[[], tuple[int, int]]) -> None:
        self._pools.append((name, sizes))

    def _observe_pools(self, options: CallbackOptions) -> Iterable[Observation]:
        for name, sizes in self._pools:
            used, idle = sizes()
            base = {"db.client.connection.pool.name": name, "userapi.endpoint": self._endpoint}
            yield Observation(used, {**base, "db.client.connection.state": "used"})
            yield Observation(idle, {**base, "db.client.connection.state": "idle"})

    def annotate(self, key: str, value: AttributeValue) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute(key, value)

    def trace_ids(self) -> tuple[str, str] | None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x"), format(context.span_id, "016x")

    def shutdown(self) -> None:
        # Bounded: a collector that is down must not hold a draining pod past its grace period.
        self._tracer_provider.shutdown()
        self._meter_provider.shutdown(timeout_millis=5000)
