"""Every rendered Knative Service against Knative's own schema (@kubernetes-models/knative)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.deploy.test_helm import knative_services, render
from tests.deploy.test_manifests import OVERLAYS, _build

VALIDATOR = Path(__file__).resolve().parent / "knative-schema"


def schema_errors(objects: list[dict[str, Any]], kind: str = "Service") -> dict[str, str]:
    """{index: error} for each of `objects` (all of `kind`: a Knative Service, or a
    PrometheusRule) that the models generated from the project's Go types reject."""
    node = shutil.which("node")
    assert node, "node is needed (apt-get install nodejs); scripts/bootstrap installs it"
    assert (VALIDATOR / "node_modules").exists(), (
        "run `make install` (npm ci in tests/deploy/knative-schema)"
    )
    result = subprocess.run(
        [node, str(VALIDATOR / "validate.mjs"), kind],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=VALIDATOR,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_chart_services_match_knatives_schema() -> None:
    services = list(knative_services(render()).values())
    services += list(knative_services(render({"devMode": True})).values())
    assert schema_errors(services) == {}


def test_overlay_services_match_knatives_schema() -> None:
    services = []
    for overlay in OVERLAYS:
        services += [
            o for o in _build(overlay) if o["apiVersion"].startswith("serving.knative.dev")
        ]
    assert len(services) == 6 * len(OVERLAYS)
    assert schema_errors(services) == {}


def test_the_schema_check_catches_a_broken_service() -> None:
    broken = knative_services(render())["get-user"]
    broken["spec"]["template"]["spec"]["containerConcurrency"] = "ten"
    broken["spec"]["template"]["spec"]["timeoutSeconds"] = -5.5
    errors = schema_errors([broken])
    assert "containerConcurrency" in errors["0"] or "timeoutSeconds" in errors["0"]
