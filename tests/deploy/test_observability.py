"""The chart's telemetry: the OTLP settings and the headers Secret, and behind their flags the
Grafana dashboard ConfigMap and the PrometheusRule, checked against their schemas and, for their
PromQL, by a real Prometheus's promtool (Debian's `prometheus` package), alerts included."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from userapi.platform.telemetry import INSTRUMENTS

from tests.support import knative_rules
from tests.support.chart import KUBERNETES_VERSION, knative_services, render
from tests.support.knative_schema import schema_errors

ON = {
    "telemetry": {
        "enabled": True,
        "endpoint": "http://otel-collector.observability:4318",
        "headersSecret": "otlp-headers",
        "samplerRatio": "0.25",
        "dashboard": {"enabled": True},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    }
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is needed (apt-get install prometheus); scripts/bootstrap installs it"
    return path


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def prometheus_name(instrument: str) -> list[str]:
    """What an OpenTelemetry instrument is called in Prometheus (the collector's prometheus
    exporter and Prometheus' OTLP receiver by default): dots to underscores, `_seconds` for
    unit s, `_total` for counters, _bucket/_sum/_count for histograms."""
    kind, unit, _ = INSTRUMENTS[instrument]
    name = instrument.replace(".", "_") + ("_seconds" if unit == "s" else "")
    if kind == "histogram":
        return [f"{name}_bucket", f"{name}_sum", f"{name}_count"]
    return [f"{name}_total" if kind == "counter" else name]


KNOWN_METRICS = {name for instrument in INSTRUMENTS for name in prometheus_name(instrument)}
_METRIC = re.compile(r"\b((?:http|userapi|db)_[a-z0-9_]+)\b")


def rules_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (rule,) = of_kind(objects, "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def dashboard_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = [o for o in of_kind(objects, "ConfigMap") if "userapi.json" in o["data"]]
    return json.loads(config_map["data"]["userapi.json"])  # type: ignore[no-any-return]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_off_by_default_renders_nothing_of_it() -> None:
    objects = render()
    assert of_kind(objects, "PrometheusRule") == []
    assert all("userapi.json" not in o.get("data", {}) for o in of_kind(objects, "ConfigMap"))
    config = next(o for o in objects if o["metadata"]["name"] == "demo-config")
    assert not any(key.startswith("OTEL_") for key in config["data"])


def test_on_the_endpoint_and_sampling_reach_the_configmap_and_headers_come_from_a_secret() -> None:
    objects = render(ON)
    config = next(o for o in objects if o["metadata"]["name"] == "demo-config")
    assert (
        config["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    )
    assert config["data"]["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert config["data"]["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in config["data"]
    for name, service in knative_services(objects).items():
        env = {e["name"]: e for e in service["spec"]["template"]["spec"]["containers"][0]["env"]}
        headers = env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"]
        assert headers == {"name": "otlp-headers", "key": "headers"}, name
        # No second port for metrics: Knative allows one, and it is the public route's.
        ports = [
            p for c in service["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        ]
        assert len(ports) == 1, name
    assert schema_errors(list(knative_services(objects).values())) == {}
    for service in knative_services(objects).values():
        assert knative_rules.problems(service) == []


def test_on_without_an_endpoint_refuses_to_render() -> None:
    with pytest.raises(Exception, match=r"telemetry\.endpoint is required"):
        render({"telemetry": {"enabled": True}})


def test_the_dashboard_configmap_carries_the_sidecar_label_and_passes_the_schema() -> None:
    objects = render(ON)
    (config_map,) = [o for o in of_kind(objects, "ConfigMap") if "userapi.json" in o["data"]]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
    dashboard = dashboard_of(objects)
    assert dashboard["uid"] == "userapi"
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
    titles = " | ".join(panel["title"] for panel in dashboard["panels"])
    for topic in (
        "Requests",
        "Errors",
        "Latency",
        "Auth0 latency",
        "share",
        "cache",
        "Cold",
        "pool",
        "Auth0 seconds",
    ):
        assert topic in titles, topic


def test_the_prometheus_rule_passes_the_operators_schema() -> None:
    rules = of_kind(render(ON), "PrometheusRule")
    assert rules[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert schema_errors(rules, "PrometheusRule") == {}
    broken = json.loads(json.dumps(rules))
    broken[0]["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    assert schema_errors(broken, "PrometheusRule") != {}  # the validator can fail


def test_every_metric_the_rules_and_the_dashboard_query_is_one_userapi_emits() -> None:
    objects = render(ON)
    exprs = [r["expr"] for g in rules_of(objects)["groups"] for r in g["rules"]]
    exprs += dashboard_exprs(dashboard_of(objects))
    used = {m for expr in exprs for m in _METRIC.findall(expr)}
    labels = {
        "userapi_endpoint", "userapi_outcome", "userapi_cache", "userapi_auth0_operation",
        "http_route", "http_response_status_code", "db_system_name", "db_operation_name",
        "db_client_connection_state", "userapi_priority", "userapi_budget",
    }  # fmt: skip
    assert used - labels <= KNOWN_METRICS, used - labels - KNOWN_METRICS
    assert len(used - labels) >= 8


def test_promtool_accepts_the_alerts_and_the_dashboards_queries(tmp_path: Path) -> None:
    objects = render(ON)
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules_of(objects)))
    # The dashboard's queries as recording rules: promtool parses each as PromQL.
    recorded = [
        {"record": f"dashboard:query{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, expr in enumerate(dashboard_exprs(dashboard_of(objects)))
    ]
    dashboard_file = tmp_path / "dashboard-queries.yaml"
    dashboard_file.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": recorded}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules_file), str(dashboard_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "b", "rules": [{"record": "x", "expr": "rate(x[5m]"}]}]}
        )
    )
    failed = subprocess.run(
        [promtool(), "check", "rules", str(broken)], capture_output=True, timeout=60, check=False
    )
    assert failed.returncode != 0


# Series for promtool's rule tests, as userapi's metrics look in Prometheus: a healthy few
# minutes for every alert, then each alert's trouble.
def _series(metric: str, values: str, **labels: str) -> dict[str, str]:
    pairs = ",".join(f'{k}="{v}"' for k, v in {"userapi_endpoint": "get-user", **labels}.items())
    return {"series": f"{metric}{{{pairs}}}", "values": values}


def _cold_start(
    instance: str, first_minute: int, slow: bool, lifetime: int
) -> list[dict[str, str]]:
    """One process's start-up (0.5 s, or 4 s when `slow`) and first request (0.1 s) buckets,
    present from `first_minute` for `lifetime` minutes."""
    values = {"1": "0" if slow else "1", "5": "1", "+Inf": "1"}
    pad = "_ " * first_minute
    startup = [
        _series(
            "userapi_startup_duration_seconds_bucket",
            f"{pad}{count}x{lifetime}",
            le=le,
            instance=instance,
        )
        for le, count in values.items()
    ]
    first = [
        _series(
            "userapi_cold_request_duration_seconds_bucket",
            f"{pad}1x{lifetime}",
            le=le,
            instance=instance,
        )
        for le in ("0.25", "+Inf")
    ]
    return startup + first


_AUTH0 = "userapi_auth0_call_duration_seconds_count"
_LOOKUPS = "userapi_cache_lookups_total"
_BUCKETS = "http_server_request_duration_seconds_bucket"
_TESTS = {
    "UserapiAuth0Errors": [
        _series(_AUTH0, "0+60x50", userapi_outcome="ok"),
        _series(_AUTH0, "0+0x5 0+30x45", userapi_outcome="server_error"),
    ],
    "UserapiAuth0RateLimited": [
        _series(
            "userapi_auth0_rate_limited_total",
            "0x5 1+2x45",
            userapi_auth0_operation="GET /api/v2/users/{id}",
        ),
    ],
    "UserapiAuth0BudgetExhausted": [
        _series(
            "userapi_auth0_budget_exhausted_total",
            "0x5 1+3x45",
            userapi_priority="read",
            userapi_budget="shared",
        ),
    ],
    "UserapiCacheHitRatioLow": [
        _series(_LOOKUPS, "0+10x50", userapi_cache="profile", userapi_outcome="hit"),
        _series(_LOOKUPS, "0+1x5 5+20x45", userapi_cache="profile", userapi_outcome="miss"),
    ],
    "UserapiLatencyP99High": [
        _series(_BUCKETS, "0+100x50", le="0.1"),
        _series(_BUCKETS, "0+100x50", le="1"),
        _series(_BUCKETS, "0+100x5 500+110x45", le="2.5"),
        _series(_BUCKETS, "0+100x5 500+110x45", le="+Inf"),
    ],
    # As processes report them: one start-up and one first request each, under its own
    # instance, constant for the process's life. Ten quick starts, then ten slow ones.
    "UserapiColdStartsSlow": [
        series
        for i in range(20)
        for series in _cold_start(
            f"pod-{i}", first_minute=i, slow=i >= 10, lifetime=10 if i < 10 else 50 - i
        )
    ],
}


@pytest.mark.parametrize("alert", sorted(_TESTS))
def test_each_alert_fires_on_its_trouble_and_not_before(alert: str, tmp_path: Path) -> None:
    rules = rules_of(render(ON))
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rules))
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert]
    summary = rule["annotations"]["summary"].replace("{{ $labels.userapi_endpoint }}", "get-user")
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": _TESTS[alert],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": alert, "exp_alerts": []},
                    {
                        "eval_time": "50m",
                        "alertname": alert,
                        "exp_alerts": [
                            {
                                "exp_labels": _fired_labels(alert),
                                "exp_annotations": {"summary": summary},
                            }
                        ],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "test.yaml"
    test_file.write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [promtool(), "test", "rules", str(test_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def _fired_labels(alert: str) -> dict[str, str]:
    severity = {"severity": "info" if alert == "UserapiColdStartsSlow" else "warning"}
    if alert == "UserapiCacheHitRatioLow":
        return severity
    return {**severity, "userapi_endpoint": "get-user"}
