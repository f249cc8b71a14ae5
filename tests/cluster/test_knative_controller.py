"""Knative Serving's real controller reconciles the chart's Services into what runs them.

Each Service becomes a Configuration, a Revision, a Deployment with queue-proxy injected, a
PodAutoscaler and a Route, and the chart's scale and timeout settings land where Knative reads
them: the Revision's and PodAutoscaler's autoscaling annotations, the Deployment's replicas
(initial-scale) and termination grace period, queue-proxy's environment. Without an autoscaler
process the PodAutoscaler never turns Ready, so neither do the Revisions, Routes and Services:
what is checked here is what the controller builds, not traffic.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from userapi.endpoints import ENDPOINTS

from harness.cluster import QUEUE_IMAGE, ControlPlane
from tests.support.chart import knative_services, render
from tests.support.cluster import OFFLINE_IMAGES

pytestmark = pytest.mark.cluster

NAMESPACE = "reconcile"
GET_USER = {"minScale": 1, "maxScale": 4, "initialScale": 2, "timeoutSeconds": 15,
            "containerConcurrency": 40}  # fmt: skip
AUTOSCALING = "autoscaling.knative.dev/"


def wait_for(plane: ControlPlane, *args: str, timeout: float = 180) -> Any:
    """`kubectl get` until the object exists."""
    deadline = time.monotonic() + timeout
    while True:
        result = plane.kubectl("get", "-n", NAMESPACE, *args, "-o", "json", check=False)
        if result.returncode == 0:
            return yaml.safe_load(result.stdout)
        assert time.monotonic() < deadline, f"{' '.join(args)} never appeared: {result.stderr}"
        time.sleep(1)


@pytest.fixture(scope="module")
def chart_services(control_plane: ControlPlane) -> dict[str, dict[str, Any]]:
    objects = render({**OFFLINE_IMAGES, "endpoints": {"getUser": GET_USER}})
    control_plane.kubectl("create", "namespace", NAMESPACE)
    for obj in objects:
        obj["metadata"]["namespace"] = NAMESPACE
    control_plane.kubectl(
        "apply", "--server-side", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(objects)
    )
    return knative_services(objects)


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_each_service_is_reconciled_into_what_runs_it(
    control_plane: ControlPlane, chart_services: dict[str, dict[str, Any]], endpoint: str
) -> None:
    template = chart_services[endpoint]["spec"]["template"]
    scale = {
        k: v for k, v in template["metadata"]["annotations"].items() if k.startswith(AUTOSCALING)
    }
    timeout = template["spec"]["timeoutSeconds"]

    configuration = wait_for(control_plane, "configurations.serving.knative.dev", endpoint)
    assert configuration["metadata"]["ownerReferences"][0]["name"] == endpoint
    revision_name = f"{endpoint}-00001"
    revision = wait_for(control_plane, "revisions.serving.knative.dev", revision_name)
    assert revision["spec"]["timeoutSeconds"] == timeout
    assert {k: v for k, v in revision["metadata"]["annotations"].items() if k in scale} == scale

    deployment = wait_for(control_plane, "deployments.apps", f"{revision_name}-deployment")
    pod = deployment["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == [*(c["name"] for c in template["spec"]["containers"]), "queue-proxy"]
    queue = pod["containers"][-1]
    assert queue["image"] == QUEUE_IMAGE.format(version=control_plane.knative_version)
    env = {e["name"]: e.get("value") for e in queue["env"]}
    assert env["REVISION_TIMEOUT_SECONDS"] == str(timeout)
    assert env["CONTAINER_CONCURRENCY"] == str(template["spec"]["containerConcurrency"])
    assert env["SERVING_SERVICE"] == endpoint
    # Knative makes the grace period the request timeout, and starts at initial-scale.
    assert pod["terminationGracePeriodSeconds"] == timeout
    assert deployment["spec"]["replicas"] == int(scale[AUTOSCALING + "initial-scale"])

    autoscaler = wait_for(control_plane, "podautoscalers.autoscaling.internal.knative.dev",
                          revision_name)  # fmt: skip
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == f"{revision_name}-deployment"
    assert {k: v for k, v in autoscaler["metadata"]["annotations"].items() if k in scale} == scale

    route = wait_for(control_plane, "routes.serving.knative.dev", endpoint)
    assert route["spec"]["traffic"] == [
        {"configurationName": endpoint, "latestRevision": True, "percent": 100}
    ]


def test_the_tuned_endpoint_keeps_its_own_settings(
    control_plane: ControlPlane, chart_services: dict[str, dict[str, Any]]
) -> None:
    revision = wait_for(control_plane, "revisions.serving.knative.dev", "get-user-00001")
    annotations = revision["metadata"]["annotations"]
    assert (annotations[AUTOSCALING + "min-scale"], annotations[AUTOSCALING + "max-scale"],
            annotations[AUTOSCALING + "initial-scale"]) == ("1", "4", "2")  # fmt: skip
    assert revision["spec"]["containerConcurrency"] == 40
    deployment = wait_for(control_plane, "deployments.apps", "get-user-00001-deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 15
    other = wait_for(control_plane, "revisions.serving.knative.dev", "list-users-00001")
    assert other["metadata"]["annotations"][AUTOSCALING + "max-scale"] == "10"
