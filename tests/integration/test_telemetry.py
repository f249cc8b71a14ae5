"""Telemetry from real endpoint processes to a real OTLP/HTTP receiver (harness/otlp.py decodes
the protobuf): the trace continues the caller's traceparent, the spans of an uncached read sit
where they belong, the Auth0 span lasts what the emulator made it wait, nothing secret leaves,
and the metrics carry their names and labels."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from harness.emulator import EmulatorHandle
from harness.otlp import OTLPReceiver, Span
from harness.userapi import Service, migrate, service_env, start_service, user_path

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
def get_user(
    emulator: EmulatorHandle, redis_server: Any, database: str, receiver: OTLPReceiver
) -> Iterator[Service]:
    env = {**service_env(emulator, redis_server.url, database), **telemetry_env(receiver)}
    service = start_service("get-user", env)
    yield service
    service.close()


def by_trace(receiver: OTLPReceiver, trace_id: str, at_least: int) -> list[Span] | None:
    spans = [s for s in receiver.spans() if s.trace_id == trace_id]
    return spans if len(spans) >= at_least else None


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
