"""A real OTLP/HTTP receiver: what an OpenTelemetry Collector's `otlp` receiver does over HTTP,
for the tests and the benchmark.

It accepts `POST /v1/traces` and `POST /v1/metrics` with binary protobuf bodies (plain or gzip,
as the OTLP exporters send them), decodes them with the official opentelemetry-proto messages,
answers the empty Export*ServiceResponse, and keeps what it decoded as plain Python values.
Runs on a thread in the caller's process, on a free loopback port: `with OTLPReceiver() as r:`.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from harness.processes import HOST, free_port

T = TypeVar("T")

_SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class Span:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: tuple[tuple[str, dict[str, Any]], ...]
    status_code: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any]
    scope: str

    @property
    def duration_seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True)
class Point:
    """One data point of a metric, whichever its type: `value` for sums and gauges, count and
    sum for histograms."""

    metric: str
    kind: str  # sum | gauge | histogram
    unit: str
    attributes: dict[str, Any]
    value: float | None
    count: int | None
    sum: float | None
    resource: dict[str, Any]
    monotonic: bool = False
    bounds: tuple[float, ...] = ()  # histograms: the explicit bucket bounds
    bucket_counts: tuple[int, ...] = ()  # histograms: per bucket (len(bounds) + 1)


@dataclass
class _Received:
    spans: list[Span] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=lambda: {"traces": 0, "metrics": 0})
    raw_strings: list[str] = field(default_factory=list)  # every string value, for leak checks
    latest: dict[tuple[str, str], Point] = field(default_factory=dict)  # per series, for /metrics


def _decode_traces(body: bytes, into: _Received) -> None:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = _attributes(span.attributes)
                events = tuple((e.name, _attributes(e.attributes)) for e in span.events)
                into.spans.append(
                    Span(
                        name=span.name,
                        kind=_SPAN_KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=attributes,
                        events=events,
                        status_code=span.status.code,
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
                into.raw_strings.extend(_strings(attributes))
                into.raw_strings.append(span.name)
                into.raw_strings.append(span.status.message)
                for _, event_attributes in events:
                    into.raw_strings.extend(_strings(event_attributes))


def _decode_metrics(body: bytes, into: _Received) -> None:
    request = ExportMetricsServiceRequest()
    request.ParseFromString(body)
    first_new = len(into.points)
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind in ("sum", "gauge"):
                    data = getattr(metric, kind)
                    for point in data.data_points:
                        number = point.WhichOneof("value")
                        into.points.append(
                            Point(
                                metric=metric.name,
                                kind=kind,
                                unit=metric.unit,
                                attributes=_attributes(point.attributes),
                                value=float(getattr(point, number)) if number else None,
                                count=None,
                                sum=None,
                                resource=resource,
                                monotonic=kind == "sum" and metric.sum.is_monotonic,
                            )
                        )
                elif kind == "histogram":
                    for point in metric.histogram.data_points:
                        into.points.append(
                            Point(
                                metric=metric.name,
                                kind="histogram",
                                unit=metric.unit,
                                attributes=_attributes(point.attributes),
                                value=None,
                                count=int(point.count),
                                sum=float(point.sum),
                                resource=resource,
                                bounds=tuple(point.explicit_bounds),
                                bucket_counts=tuple(int(c) for c in point.bucket_counts),
                            )
                        )
                else:  # exponential histograms and summaries: userapi sends neither
                    raise ValueError(f"unexpected metric type {kind} for {metric.name}")
                for point in getattr(metric, kind).data_points:
                    into.raw_strings.extend(_strings(_attributes(point.attributes)))
        for decoded in into.points[first_new:]:
            into.latest[(decoded.metric, _labels(decoded))] = decoded


def _strings(attributes: dict[str, Any]) -> Iterator[str]:
    for key, value in attributes.items():
        yield key
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (str(v) for v in value)
        elif isinstance(value, dict):
            yield from _strings(value)


def prometheus_name(metric: str, unit: str, kind: str, monotonic: bool) -> str:
    """An OTLP metric's Prometheus name, as the OpenTelemetry Collector's prometheus exporter
    and Prometheus' OTLP receiver write it by default: dots to underscores, `_seconds` for unit
    s, `_total` for monotonic sums (units in braces are dropped)."""
    name = metric.replace(".", "_") + ("_seconds" if unit == "s" else "")
    return name + "_total" if kind == "sum" and monotonic else name


def _labels(point: Point, extra: dict[str, str] | None = None) -> str:
    labels = {
        "job": str(point.resource.get("service.name", "")),
        "instance": str(point.resource.get("service.instance.id", "")),
        **{key.replace(".", "_"): str(value) for key, value in point.attributes.items()},
        **(extra or {}),
    }
    escaped = (
        v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in labels.values()
    )
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(labels, escaped, strict=True)) + "}"


def exposition(points: Iterable[Point]) -> str:
    """The latest value of each series in Prometheus' text format: what a collector's
    prometheus exporter would serve for these points (cumulative temporality)."""
    latest: dict[tuple[str, str], Point] = {}
    for point in points:
        latest[(point.metric, _labels(point))] = point
    lines: list[str] = []
    for point in latest.values():
        name = prometheus_name(point.metric, point.unit, point.kind, point.monotonic)
        if point.kind == "histogram":
            assert point.count is not None
            assert point.sum is not None
            running = 0
            for bound, count in zip(
                [*point.bounds, float("inf")], point.bucket_counts, strict=True
            ):
                running += count
                le = "+Inf" if bound == float("inf") else repr(float(bound))
                lines.append(f"{name}_bucket{_labels(point, {'le': le})} {running}")
            lines.append(f"{name}_sum{_labels(point)} {point.sum}")
            lines.append(f"{name}_count{_labels(point)} {point.count}")
        elif point.value is not None:
            lines.append(f"{name}{_labels(point)} {point.value}")
    return "\n".join(lines) + "\n"


class OTLPReceiver:
    """`endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT should be set to. `GET /metrics` serves
    the metrics received so far in Prometheus' text format, for a real Prometheus to scrape."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self._received = _Received()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def __enter__(self) -> OTLPReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_response(404)
                    self.end_headers()
                    return
                with receiver._lock:
                    latest = list(receiver._received.latest.values())
                body = exposition(latest).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                content_type = self.headers.get("Content-Type", "")
                if content_type != "application/x-protobuf":
                    receiver.errors.append(f"{self.path}: content type {content_type!r}")
                    self.send_response(415)
                    self.end_headers()
                    return
                try:
                    with receiver._lock:
                        if self.path == "/v1/traces":
                            _decode_traces(body, receiver._received)
                            receiver._received.requests["traces"] += 1
                            answer = ExportTraceServiceResponse().SerializeToString()
                        elif self.path == "/v1/metrics":
                            _decode_metrics(body, receiver._received)
                            receiver._received.requests["metrics"] += 1
                            answer = ExportMetricsServiceResponse().SerializeToString()
                        else:
                            receiver.errors.append(f"unexpected path {self.path}")
                            self.send_response(404)
                            self.end_headers()
                            return
                except Exception as exc:  # a body that does not decode is the sender's bug
                    receiver.errors.append(f"{self.path}: {exc!r}")
                    self.send_response(400)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def clear(self) -> None:
        with self._lock:
            self._received = _Received()

    @property
    def requests(self) -> dict[str, int]:
        with self._lock:
            return dict(self._received.requests)

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._received.spans)

    def points(self, metric: str | None = None) -> list[Point]:
        with self._lock:
            return [p for p in self._received.points if metric in (None, p.metric)]

    def strings(self) -> list[str]:
        """Every attribute key and string value, span name and status message received."""
        with self._lock:
            return list(self._received.raw_strings)

    def wait_for(self, found: Callable[[OTLPReceiver], T | None], timeout: float = 30.0) -> T:
        """Poll until `found(self)` returns something truthy; its value, or TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = found(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"OTLP receiver: condition not met in {timeout} s "
                    f"(received {self.requests}, errors {self.errors})"
                )
            time.sleep(0.05)
