"""Every rendered Knative Service against Knative's own schema (@kubernetes-models/knative)."""

from __future__ import annotations

from tests.support.chart import OVERLAYS, build_overlay, knative_services, render
from tests.support.knative_schema import schema_errors


def test_chart_services_match_knatives_schema() -> None:
    services = list(knative_services(render()).values())
    services += list(knative_services(render({"local": True, "devMode": True})).values())
    assert schema_errors(services) == {}


def test_overlay_services_match_knatives_schema() -> None:
    services = []
    for overlay in OVERLAYS:
        services += [
            o for o in build_overlay(overlay) if o["apiVersion"].startswith("serving.knative.dev")
        ]
    assert len(services) == 6 * len(OVERLAYS)
    assert schema_errors(services) == {}


def test_the_schema_check_catches_a_broken_service() -> None:
    broken = knative_services(render())["get-user"]
    broken["spec"]["template"]["spec"]["containerConcurrency"] = "ten"
    broken["spec"]["template"]["spec"]["timeoutSeconds"] = -5.5
    errors = schema_errors([broken])
    assert "containerConcurrency" in errors["0"] or "timeoutSeconds" in errors["0"]
