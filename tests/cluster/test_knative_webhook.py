"""Knative Serving's real admission webhook (defaulting and validation) judges the chart's Services.

Every Service the chart renders must be admitted and come back defaulted by the webhook; every
case in tests/support/knative_rules.py (the offline copy of the webhook's rules) must be refused by
the real webhook too, so the copy cannot drift from the real thing unnoticed.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from userapi.endpoints import ENDPOINTS

from harness.cluster import ControlPlane
from tests.support import knative_rules
from tests.support.chart import knative_services, render

pytestmark = pytest.mark.cluster


def dry_run(
    plane: ControlPlane, namespace: str, obj: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """Create `obj` with --dry-run=server: schema, CEL rules and every admission webhook run."""
    return plane.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-",
        input=json.dumps(obj), check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def webhook_namespace(control_plane: ControlPlane) -> str:
    control_plane.kubectl("create", "namespace", "webhook-checks")
    # The webhook dry-runs each revision's pod, and a pod needs its ServiceAccount to exist: the
    # chart's own, which helm and kustomize both create before the Services.
    account = next(o for o in render() if o["kind"] == "ServiceAccount")
    account["metadata"]["namespace"] = "webhook-checks"
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(account))
    return "webhook-checks"


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_the_webhook_admits_and_defaults_each_chart_service(
    control_plane: ControlPlane, webhook_namespace: str, endpoint: str
) -> None:
    service = knative_services(render())[endpoint]
    service["metadata"]["namespace"] = webhook_namespace
    result = dry_run(control_plane, webhook_namespace, service)
    assert result.returncode == 0, result.stderr
    admitted = json.loads(result.stdout)
    # What only Knative's defaulting webhook writes: who created it and the traffic block.
    assert admitted["metadata"]["annotations"]["serving.knative.dev/creator"] == "admin"
    assert admitted["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]
    # The revision template it leaves exactly as the chart wrote it (the chart writes Knative's
    # defaults out): a field it added would be dropped by Helm's next server-side apply, which
    # Knative refuses while a revision name (revisionSuffix) is kept (templates/services.yaml).
    assert admitted["spec"]["template"] == service["spec"]["template"]


@pytest.mark.parametrize("case", sorted(knative_rules.BROKEN))
def test_the_webhook_refuses_each_case_the_offline_rules_refuse(
    control_plane: ControlPlane, webhook_namespace: str, case: str
) -> None:
    service = knative_services(render())["get-user"]
    service["metadata"]["namespace"] = webhook_namespace
    broken = knative_rules.broken(service, case)
    assert knative_rules.problems(broken) != [], f"the offline rules accept {case!r}"
    result = dry_run(control_plane, webhook_namespace, broken)
    assert result.returncode != 0, f"Knative's webhook admitted {case!r}"
    # Refused by the webhook's validation, or by the CRD's schema before it (fields Knative's
    # API does not have at all), not by some unrelated failure such as its pod dry run.
    refused_by = "webhook" if "denied the request: validation failed" in result.stderr else (
        "schema" if "unknown field" in result.stderr else "?")  # fmt: skip
    assert refused_by != "?", result.stderr


def test_the_webhook_makes_a_writable_secret_mount_read_only(
    control_plane: ControlPlane, webhook_namespace: str
) -> None:
    # Not refused (the offline rules used to claim it was): Knative's defaulting sets readOnly on
    # every mount that is not an emptyDir, PVC or ephemeral volume, before validation runs.
    service = knative_services(render())["get-user"]
    service["metadata"]["namespace"] = webhook_namespace
    app = service["spec"]["template"]["spec"]["containers"][0]
    app["volumeMounts"][0]["readOnly"] = False
    result = dry_run(control_plane, webhook_namespace, service)
    assert result.returncode == 0, result.stderr
    admitted = json.loads(result.stdout)["spec"]["template"]["spec"]["containers"][0]
    assert admitted["volumeMounts"][0] == {**app["volumeMounts"][0], "readOnly": True}
