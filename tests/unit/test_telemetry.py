"""Telemetry's switch (docs/observability.md): off imports no OpenTelemetry module; the standard
OTEL_* variables decide where each signal goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from userapi.platform import telemetry
from userapi.platform.settings import Settings

from harness.userapi import settings_from

# A process that builds an endpoint's app and runs its whole lifespan (start-up, ready, the
# shutdown flush), then prints every module it imported.
_SERVE_AND_LIST_MODULES = """
import asyncio, json, sys
from userapi import endpoints
from userapi.platform.startup import load_settings

async def main():
    settings = load_settings()
    app = endpoints.build_app("get-user", ["get-user"], settings)
    async with app.router.lifespan_context(app):
        pass

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""

_BASE_ENV = {
    "AUTH0_DOMAIN": "http://127.0.0.1:9",
    "AUTH0_ALLOW_INSECURE_HTTP": "true",
    "AUTH0_AUDIENCE": "https://api.example.com",
    "AUTH0_CLIENT_ID": "client",
    "AUTH0_CLIENT_SECRET": "secret",
    # Redis and PostgreSQL as a pod has them: start-up builds their clients (connecting to
    # neither), so what those libraries import counts, as in a real cold start.
    "REDIS_URL": "redis://127.0.0.1:9",
    "DATABASE_URL": "postgresql://userapi@127.0.0.1:9/userapi",
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
}


def modules_of_a_served_app(env: dict[str, str]) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _SERVE_AND_LIST_MODULES],
        env={**_BASE_ENV, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def opentelemetry_modules(modules: set[str]) -> set[str]:
    return {
        m
        for m in modules
        if m in ("opentelemetry", "userapi.platform.otel") or m.startswith("opentelemetry.")
    }


def imported_by_fastapi_itself() -> set[str]:
    # FastAPI (0.165, the locked version) depends on opentelemetry-api and imports it with
    # itself, for its own optional tracing: those modules come with any FastAPI app.
    code = "import sys, json, fastapi; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return opentelemetry_modules(set(json.loads(result.stdout)))


def test_off_by_default_imports_no_opentelemetry_module_beyond_fastapis_own() -> None:
    extra = opentelemetry_modules(modules_of_a_served_app({})) - imported_by_fastapi_itself()
    assert extra == set()


def test_sdk_disabled_wins_over_an_endpoint_and_imports_nothing() -> None:
    modules = modules_of_a_served_app(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"}
    )
    assert opentelemetry_modules(modules) - imported_by_fastapi_itself() == set()


def test_an_endpoint_turns_it_on_and_the_exporter_loads_only_when_it_exports() -> None:
    # The counterpart that shows the two tests above can fail. Nothing was recorded, so nothing
    # was exported: the OTLP exporter (requests, protobuf) was never needed.
    modules = modules_of_a_served_app({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert "userapi.platform.otel" in modules
    assert "opentelemetry.sdk.trace" in modules
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" not in modules


def test_the_sdk_is_hidden_only_inside_sdk_hidden_and_only_while_off() -> None:
    # redis-py imports the SDK when it can (adapters/shared_store.py imports it inside sdk_hidden).
    code = """
from userapi.platform import telemetry
with telemetry.sdk_hidden():
    try:
        import opentelemetry.sdk.metrics
        print("found")
    except ImportError:
        print("hidden")
import opentelemetry.sdk.metrics
print("found")
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["hidden", "found"]


def settings(**env: str) -> Settings:
    return settings_from(env)


def test_the_base_endpoint_gets_the_signal_paths_and_a_per_signal_one_is_used_as_is() -> None:
    base = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/")
    assert base.otlp_endpoint("traces") == "http://collector:4318/v1/traces"
    assert base.otlp_endpoint("metrics") == "http://collector:4318/v1/metrics"
    own = settings(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://tempo:4318/otlp/v1/traces",
    )
    assert own.otlp_endpoint("traces") == "http://tempo:4318/otlp/v1/traces"
    assert own.otlp_endpoint("metrics") == "http://collector:4318/v1/metrics"


def test_only_metrics_or_nothing() -> None:
    only_metrics = settings(
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="http://c:4318/v1/metrics", OTEL_TRACES_EXPORTER="none"
    )
    assert only_metrics.otlp_endpoint("traces") is None
    assert only_metrics.otlp_endpoint("metrics") == "http://c:4318/v1/metrics"
    assert settings().otlp_endpoint("traces") is None
    disabled = settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318", OTEL_SDK_DISABLED="true")
    assert disabled.otlp_endpoint("traces") is None
    assert disabled.otlp_endpoint("metrics") is None


@pytest.mark.parametrize(
    ("name", "arg", "expected"),
    [
        ("parentbased_traceidratio", "0.25", "ParentBased{root:TraceIdRatioBased{0.25}"),
        ("parentbased_always_on", "1", "ParentBased{root:AlwaysOnSampler"),
        ("traceidratio", "0.5", "TraceIdRatioBased{0.5}"),
        ("always_off", "1", "AlwaysOffSampler"),
    ],
)
def test_the_sampler_follows_otel_traces_sampler(name: str, arg: str, expected: str) -> None:
    from userapi.platform.otel import sampler

    chosen = sampler(settings(OTEL_TRACES_SAMPLER=name, OTEL_TRACES_SAMPLER_ARG=arg))
    assert chosen.get_description().startswith(expected)


def test_a_ratio_outside_zero_to_one_is_a_configuration_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        settings(OTEL_TRACES_SAMPLER_ARG="1.5")


def test_process_age_counts_from_the_process_start() -> None:
    # A child that sleeps 0.3 s before asking: its age includes the sleep and its start-up.
    code = (
        "import time; time.sleep(0.3); "
        "from userapi.platform.telemetry import process_age_seconds; print(process_age_seconds())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    age = float(result.stdout)
    assert 0.3 <= age < 30


def test_off_the_seam_hands_out_one_shared_no_op() -> None:
    assert not telemetry.enabled()
    with telemetry.span("x") as span, telemetry.operation("redis", "GET") as op:
        span.set("a", 1)
        op.outcome("hit")
    assert span is telemetry.OFF
    assert telemetry.request({"type": "http"}) is telemetry.OFF
    assert telemetry.trace_ids() is None
