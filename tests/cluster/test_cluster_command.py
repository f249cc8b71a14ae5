"""`userapi cluster status | urls | coldstart` against the real API server, on Services Knative's
controller has reconciled and pods kwok runs (tests/deploy/test_cluster_tooling.py keeps the stub
API server for what needs the activator: a request that wakes a scaled-to-zero endpoint)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from userapi.endpoints import ENDPOINTS

from harness.cluster import ControlPlane
from tests.support.chart import knative_services, render
from tests.support.cluster import OFFLINE_IMAGES

pytestmark = pytest.mark.cluster

USERAPI = str(Path(sys.executable).parent / "userapi")
NAMESPACE = "tooling"


def userapi(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [USERAPI, "cluster", *args, "-n", NAMESPACE, "--kubeconfig", str(plane.kubeconfig)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def deployed(control_plane: ControlPlane) -> dict[str, dict[str, Any]]:
    objects = render({**OFFLINE_IMAGES, "endpoints": {"listUsers": {"initialScale": 2}}})
    # A Service that is not one of ours: the tool must leave it out.
    stranger = yaml.safe_load(yaml.safe_dump(knative_services(objects)["get-user"]))
    stranger["metadata"] = {"name": "not-ours"}
    control_plane.kubectl("create", "namespace", NAMESPACE)
    control_plane.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-",
                          input=yaml.safe_dump_all([*objects, stranger]))  # fmt: skip
    # Each endpoint's Deployment starts initial-scale pods, which kwok's node runs and readies.
    expected = {name: 2 if name == "list-users" else 1 for name in ENDPOINTS}
    deadline = time.monotonic() + 240
    while True:
        pods = control_plane.get("-n", NAMESPACE, "pods")["items"]
        ready: dict[str, int] = {}
        for pod in pods:
            conditions = pod["status"].get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                name = pod["metadata"]["labels"].get("serving.knative.dev/service", "")
                ready[name] = ready.get(name, 0) + 1
        if all(ready.get(name, 0) == count for name, count in expected.items()):
            break
        assert time.monotonic() < deadline, (
            f"pods never became ready: {ready}\n{_what_is_there(control_plane)}"
        )
        time.sleep(1)
    return knative_services(objects)


def _what_is_there(plane: ControlPlane) -> str:
    """Where the chain from Service to Ready pod stopped, for the failure message."""
    lines = []
    for service in plane.get("-n", NAMESPACE, "ksvc")["items"]:
        conditions = {c["type"]: c for c in service.get("status", {}).get("conditions", [])}
        ready = conditions.get("Ready", {})
        reason = f"{ready.get('reason', '')} {ready.get('message', '')}"
        lines.append(f"ksvc {service['metadata']['name']}: Ready={ready.get('status')} {reason}")
    for deployment in plane.get("-n", NAMESPACE, "deployments")["items"]:
        status = deployment.get("status", {})
        counts = f"{status.get('readyReplicas', 0)}/{status.get('replicas', 0)}"
        lines.append(f"deployment {deployment['metadata']['name']}: {counts} ready")
    for pod in plane.get("-n", NAMESPACE, "pods")["items"]:
        where = pod["spec"].get("nodeName", "no node")
        lines.append(f"pod {pod['metadata']['name']}: {pod['status'].get('phase')} on {where}")
    nodes = plane.get("nodes")["items"]
    lines.append(f"nodes: {[node['metadata']['name'] for node in nodes]}")
    return "\n".join(lines)


def test_status_lists_the_endpoints_with_their_real_pods_and_scale(
    control_plane: ControlPlane, deployed: dict[str, dict[str, Any]]
) -> None:
    result = userapi(control_plane, "status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ENDPOINT", "READY", "PODS", "MIN", "MAX", "REVISION", "URL"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(ENDPOINTS)  # not-ours is left out
    for name, row in rows.items():
        annotations = deployed[name]["spec"]["template"]["metadata"]["annotations"]
        # No autoscaler and no ingress here: Knative never calls a Service Ready.
        assert row[1] == "no"
        assert row[2] == ("2" if name == "list-users" else "1")
        assert row[3] == annotations["autoscaling.knative.dev/min-scale"]
        assert row[4] == annotations["autoscaling.knative.dev/max-scale"]


def test_urls_are_the_ones_knatives_route_gives(
    control_plane: ControlPlane, deployed: dict[str, dict[str, Any]]
) -> None:
    result = userapi(control_plane, "urls")
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("\t") for line in result.stdout.splitlines())
    assert set(printed) == set(ENDPOINTS)
    for name in ENDPOINTS:
        service = control_plane.get("-n", NAMESPACE, "ksvc", name)
        assert printed[name] == service["status"].get("url", "-")


def test_coldstart_says_so_when_an_endpoint_never_scales_to_zero(
    control_plane: ControlPlane, deployed: dict[str, dict[str, Any]]
) -> None:
    # Its pod is real and Ready, and nothing (no autoscaler here) ever removes it.
    started = time.monotonic()
    result = userapi(control_plane, "coldstart", "get-user", "--idle-timeout", "3")
    assert result.returncode != 0
    assert "get-user still has pods after 3s idle" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60
