"""Telemetry from real endpoint processes to a real OTLP/HTTP receiver (harness/otlp.py decodes
the protobuf): the trace continues the caller's traceparent, the spans of an uncached read sit
where they belong, the Auth0 span lasts what the emulator made it wait, nothing secret leaves,
and the metrics carry their names and labels."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from userapi.domain.users import user_path

from harness.emulator import EmulatorHandle
from harness.otlp import OTLPReceiver, Span
from harness.userapi import Service, migrate, service_env, start_service

pytestmark = pytest.mark.integration

EMULATOR_LATENCY_S = 0.15


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def database(database_url: str) -> str:
    migrate(database_url)
    return database_url


def telemetry_env(receiver: OTLPReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        # A secret header: it must reach the receiver as a header, never as an attribute.
        "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=otlp-secret-key",
    }


@pytest.fixture(scope="module")
def serve(
    emulator: EmulatorHandle, redis_server: Any, database: str, receiver: OTLPReceiver
) -> Iterator[Callable[[str], Service]]:
    """Starts an endpoint (once per module) exporting to the receiver."""
    env = {**service_env(emulator, redis_server.url, database), **telemetry_env(receiver)}
    # Its own keys in the session's Redis: a management token that earlier modules left there
    # would spare these processes the token request whose metric is checked below.
    env["REDIS_KEY_PREFIX"] = f"telemetry-{secrets.token_hex(4)}:"
    started: dict[str, Service] = {}

    def start(endpoint: str) -> Service:
        if endpoint not in started:
            started[endpoint] = start_service(endpoint, env)
        return started[endpoint]

    yield start
    for service in started.values():
        service.close()


@pytest.fixture(scope="module")
def get_user(serve: Callable[[str], Service]) -> Service:
    return serve("get-user")


def by_trace(receiver: OTLPReceiver, trace_id: str, at_least: int) -> list[Span] | None:
    """The trace's spans once its server span (which ends last) and `at_least` spans are in."""
    spans = [s for s in receiver.spans() if s.trace_id == trace_id]
    complete = any(s.kind == "server" for s in spans) and len(spans) >= at_least
    return spans if complete else None


def traceparent() -> tuple[str, str, str]:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{parent_id}-01", trace_id, parent_id


def test_an_uncached_read_is_one_trace_continuing_the_callers(
    get_user: Service, clean_emulator: EmulatorHandle, receiver: OTLPReceiver
) -> None:
    email = f"traced-{secrets.token_hex(4)}@example.com"
    password_hint = "Pa55word!x"  # the emulator's create_user password
    user = clean_emulator.create_user(email, name="Ada Lovelace")
    token = clean_emulator.token("auth0|reader0000000000000000000", ["read:users"])
    clean_emulator.latency(EMULATOR_LATENCY_S * 1000)
    header, trace_id, parent_id = traceparent()

    response = get_user.get(user_path(user["user_id"]), token, traceparent=header)
    assert response.status_code == 200, response.text

    spans = receiver.wait_for(lambda r: by_trace(r, trace_id, 5))
    server = [s for s in spans if s.kind == "server"]
    assert len(server) == 1
    root = server[0]
    # The server span is the caller's child: the trace runs on from queue-proxy into the app.
    assert root.parent_span_id == parent_id
    assert root.name == "GET /users/{user_id}"
    assert root.attributes["http.route"] == "/users/{user_id}"
    assert root.attributes["http.response.status_code"] == 200
    ids = {s.span_id for s in spans}
    for span in spans:
        if span is not root:
            assert span.parent_span_id in ids, f"{span.name} hangs outside the trace"
            assert root.start_ns <= span.start_ns, span.name
            assert span.end_ns <= root.end_ns, span.name
    names = {s.name for s in spans}
    assert "userapi.auth.verify" in names
    assert "userapi.cache.get profile" in names
    auth0 = [s for s in spans if s.name == "GET /api/v2/users/{id}" and s.kind == "client"]
    assert len(auth0) == 1
    assert auth0[0].duration_seconds >= EMULATOR_LATENCY_S
    assert auth0[0].attributes["url.template"] == "/api/v2/users/{id}"
    assert auth0[0].attributes["http.response.status_code"] == 200

    # The request log line of this request carries the same trace.
    lines = [line for line in get_user.request_logs() if line.get("trace_id") == trace_id]
    assert len(lines) == 1
    assert lines[0]["span_id"] == root.span_id

    # Nothing that identifies or authenticates anyone, anywhere in what was exported.
    forbidden = [token, email, password_hint, "otlp-secret-key", user["user_id"]]
    leaked = [s for s in receiver.strings() for f in forbidden if f in s]
    assert leaked == []


def test_a_read_from_the_process_copy_is_one_span_that_says_so(
    get_user: Service, clean_emulator: EmulatorHandle, receiver: OTLPReceiver
) -> None:
    """The cached path builds no child spans: a remembered token and the process's own copy
    are a dict lookup each, reported as attributes of the server span."""
    user = clean_emulator.create_user(f"copied-{secrets.token_hex(4)}@example.com")
    token = clean_emulator.token("auth0|reader0000000000000000000", ["read:users"])
    path = user_path(user["user_id"])
    for _ in range(3):  # verified, read from Redis and kept; then from the copy
        assert get_user.get(path, token).status_code == 200
    header, trace_id, _ = traceparent()
    assert get_user.get(path, token, traceparent=header).status_code == 200
    spans = receiver.wait_for(lambda r: by_trace(r, trace_id, 1))
    assert [s.kind for s in spans] == ["server"]
    attributes = spans[0].attributes
    assert attributes["userapi.auth.outcome"] == "memoized"
    assert attributes["userapi.cache.outcome"] == "hit"
    assert attributes["userapi.cache.source"] == "process"


def test_a_caller_that_did_not_sample_gets_no_spans_but_its_request_is_counted(
    get_user: Service, clean_emulator: EmulatorHandle, receiver: OTLPReceiver
) -> None:
    user = clean_emulator.create_user(f"unsampled-{secrets.token_hex(4)}@example.com")
    token = clean_emulator.token("auth0|reader0000000000000000000", ["read:users"])
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    sampled_header, sampled_id, _ = traceparent()
    unsampled = get_user.get(
        user_path(user["user_id"]), token, traceparent=f"00-{trace_id}-{parent_id}-00"
    )
    assert unsampled.status_code == 200
    # A sampled request after it: once its spans are in, the unsampled one's would be too.
    assert (
        get_user.get(user_path(user["user_id"]), token, traceparent=sampled_header).status_code
        == 200
    )
    receiver.wait_for(lambda r: by_trace(r, sampled_id, 3))
    assert [s for s in receiver.spans() if s.trace_id == trace_id] == []
    lines = [line for line in get_user.request_logs() if line.get("trace_id") == trace_id]
    assert len(lines) == 1  # the log line still names the caller's trace


def test_a_429_is_waited_out_and_retried_each_attempt_its_own_span(
    get_user: Service, clean_emulator: EmulatorHandle, receiver: OTLPReceiver
) -> None:
    user = clean_emulator.create_user(f"limited-{secrets.token_hex(4)}@example.com")
    token = clean_emulator.token("auth0|reader0000000000000000000", ["read:users"])
    clean_emulator.fault(
        "GET /api/v2/users/{id}",
        kind="status",
        status=429,
        times=1,
        headers={"x-ratelimit-limit": "50", "x-ratelimit-remaining": "0"},
    )
    header, trace_id, _ = traceparent()
    response = get_user.get(user_path(user["user_id"]), token, traceparent=header)
    assert response.status_code == 200, response.text

    spans = receiver.wait_for(lambda r: by_trace(r, trace_id, 7))
    attempts = sorted(
        (s for s in spans if s.name == "GET /api/v2/users/{id}"), key=lambda s: s.start_ns
    )
    assert [a.attributes["http.response.status_code"] for a in attempts] == [429, 200]
    assert "http.request.resend_count" not in attempts[0].attributes
    assert attempts[1].attributes["http.request.resend_count"] == 1
    assert attempts[0].attributes["userapi.outcome"] == "rate_limited"
    waits = [s for s in spans if s.name == "userapi.auth0.wait"]
    assert len(waits) == 1
    assert waits[0].attributes["reason"] == "rate_limited"
    # The wait sits between the two attempts.
    assert attempts[0].end_ns <= waits[0].start_ns <= waits[0].end_ns <= attempts[1].start_ns

    def rate_limited(r: OTLPReceiver) -> list[Any]:
        return [
            p
            for p in r.points("userapi.auth0.rate_limited")
            if p.attributes.get("userapi.auth0.operation") == "GET /api/v2/users/{id}"
        ]

    assert receiver.wait_for(rate_limited)[-1].value >= 1
    headroom = receiver.wait_for(lambda r: r.points("userapi.auth0.rate_limit.remaining"))
    assert {p.attributes["userapi.auth0.operation"] for p in headroom} >= {"GET /api/v2/users/{id}"}
    retries = receiver.wait_for(lambda r: r.points("userapi.auth0.retries"))
    assert any(p.attributes["reason"] == "rate_limited" for p in retries)


def latest(receiver: OTLPReceiver, metric: str, **labels: Any) -> Any:
    """The last exported point of `metric` whose attributes include `labels`, or None."""
    points = [
        p
        for p in receiver.points(metric)
        if all(p.attributes.get(k) == v for k, v in labels.items())
    ]
    return points[-1] if points else None


def test_the_metrics_arrive_with_their_names_and_low_cardinality_labels(
    get_user: Service, clean_emulator: EmulatorHandle, receiver: OTLPReceiver
) -> None:
    user = clean_emulator.create_user(f"metered-{secrets.token_hex(4)}@example.com")
    token = clean_emulator.token("auth0|reader0000000000000000000", ["read:users"])
    for _ in range(3):  # a miss, then hits
        assert get_user.get(user_path(user["user_id"]), token).status_code == 200
    assert get_user.get(user_path(user["user_id"])).status_code == 401

    def requests(r: OTLPReceiver) -> Any:
        point = latest(
            r,
            "http.server.request.duration",
            **{"http.route": "/users/{user_id}", "http.response.status_code": 200},
        )
        return point if point is not None and point.count >= 3 else None

    point = receiver.wait_for(requests)
    assert point.unit == "s"
    assert point.attributes == {
        "http.request.method": "GET",
        "http.route": "/users/{user_id}",
        "http.response.status_code": 200,
        "userapi.endpoint": "get-user",
    }
    assert receiver.wait_for(
        lambda r: latest(r, "http.server.request.duration", **{"http.response.status_code": 401})
    )

    def hits(r: OTLPReceiver) -> Any:
        point = latest(
            r, "userapi.cache.lookups", **{"userapi.cache": "profile", "userapi.outcome": "hit"}
        )
        # An export may fall between the reads: wait for the one that counts both hits.
        return point if point is not None and point.value >= 2 else None

    assert receiver.wait_for(hits).monotonic
    auth0 = receiver.wait_for(
        lambda r: latest(
            r,
            "userapi.auth0.call.duration",
            **{"userapi.auth0.operation": "GET /api/v2/users/{id}", "userapi.outcome": "ok"},
        )
    )
    assert auth0.count >= 1
    assert receiver.wait_for(
        lambda r: (
            latest(
                r, "userapi.auth0.call.duration", **{"userapi.auth0.operation": "POST /oauth/token"}
            )
            or latest(
                r,
                "userapi.auth0.call.duration",
                **{"userapi.auth0.operation": "GET /.well-known/jwks.json"},
            )
        )
    )
    cost = receiver.wait_for(
        lambda r: latest(r, "userapi.request.auth0.duration", **{"http.route": "/users/{user_id}"})
    )
    assert cost.sum > 0
    redis_ops = receiver.wait_for(
        lambda r: latest(r, "db.client.operation.duration", **{"db.system.name": "redis"})
    )
    assert redis_ops.attributes["db.operation.name"] in {
        "GET",
        "MGET",
        "SET",
        "SET NX",
        "EVAL",
        "DEL",
        # A write announced to every process's copy (adapters/local_cache.py).
        "SET PUBLISH",
        "DEL PUBLISH",
        "PUBLISH",
    }
    # Cold start: one start-up per process, and its first request.
    startup = receiver.wait_for(lambda r: latest(r, "userapi.startup.duration"))
    assert startup.count == 1
    assert 0 < startup.sum < 60
    cold = receiver.wait_for(lambda r: latest(r, "userapi.cold_request.duration"))
    assert cold.count == 1
    # Every label of every metric is from a short fixed vocabulary: no ids, no paths.
    allowed = {
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "error.type",
        "userapi.endpoint",
        "userapi.auth0.operation",
        "userapi.outcome",
        "userapi.cache",
        "reason",
        "db.system.name",
        "db.operation.name",
        "db.client.connection.state",
        "db.client.connection.pool.name",
    }
    seen = {key for p in receiver.points() for key in p.attributes}
    assert seen <= allowed
    routes = {p.attributes.get("http.route") for p in receiver.points()} - {None}
    assert routes <= {"/users/{user_id}", "/users/me"}


@pytest.fixture(scope="module")
def create_user(serve: Callable[[str], Service]) -> Service:
    return serve("create-user")


def test_a_create_shows_the_idempotency_claim_and_the_database(
    create_user: Service, clean_emulator: EmulatorHandle, receiver: OTLPReceiver
) -> None:
    admin = clean_emulator.token("auth0|admin0000000000000000000", ["create:users"])
    email = f"created-{secrets.token_hex(4)}@example.com"
    password = "Str0ng-passw0rd!"
    header, trace_id, _ = traceparent()
    response = create_user.http.post(
        "/users",
        json={"email": email, "password": password, "name": "New Person"},
        headers={
            "Authorization": f"Bearer {admin}",
            "Idempotency-Key": f"key-{secrets.token_hex(8)}",
            "traceparent": header,
        },
    )
    assert response.status_code == 201, response.text

    spans = receiver.wait_for(lambda r: by_trace(r, trace_id, 6))
    by_name = {s.name: s for s in spans}
    root = by_name["POST /users"]
    claim = by_name["userapi.idempotency.claim"]
    assert claim.parent_span_id == root.span_id
    assert claim.attributes["userapi.outcome"] == "new"
    inserts = [s for s in spans if s.attributes.get("db.system.name") == "postgresql"]
    assert {s.attributes["db.operation.name"] for s in inserts} >= {"INSERT"}
    assert all(
        "$1" in s.attributes["db.query.text"]
        for s in inserts
        if "WHERE" in s.attributes["db.query.text"]
    )
    assert "POST /api/v2/users" in by_name
    pool = receiver.wait_for(
        lambda r: latest(r, "db.client.connection.count", **{"userapi.endpoint": "create-user"})
    )
    assert pool.attributes["db.client.connection.state"] in {"used", "idle"}
    forbidden = [admin, email, password, response.json()["user_id"]]
    assert [s for s in receiver.strings() for f in forbidden if f in s] == []
