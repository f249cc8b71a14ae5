"""One API host on the real node (docs/architecture.md, "One API host"): Gateway API's CRDs (the
pinned module's) are installed and Traefik's Gateway API provider runs the node's Gateway; every
overlay's route objects are admitted by the API server (the CRDs' CEL rules, which only it runs).

The route itself, with the chart's own endpoints behind it (every operation, the gateway's 404,
scale from zero, a canary, tags, promotion and rollback by `helm upgrade`), is tested on the
chart's release in test_chart_on_node.py.
"""

from __future__ import annotations

import copy
import json
import time

import pytest

from harness.cluster import gateway_api
from harness.cluster.node import GATEWAY_CLASS, GATEWAY_NAME, GATEWAY_NAMESPACE
from manifests.generate import overlay_values, render_chart
from tests.support.chart import OVERLAYS
from tests.support.real_node import API_VALUES, Node

pytestmark = pytest.mark.cluster

NAMESPACE = "one-host"


@pytest.fixture(scope="module")
def node(real_node: Node) -> Node:
    assert not real_node.is_down, "the real node was taken down before this module ran"
    return real_node


def test_gateway_api_is_installed_and_traefik_runs_the_gateway(node: Node) -> None:
    version, _ = gateway_api.module()
    crds = node.plane.get("crd")["items"]
    bundles = {c["metadata"]["name"]: c["metadata"]["annotations"].get(
        "gateway.networking.k8s.io/bundle-version") for c in crds
        if c["spec"]["group"] == "gateway.networking.k8s.io"}  # fmt: skip
    assert set(bundles.values()) == {version}
    assert "httproutes.gateway.networking.k8s.io" in bundles
    deadline = time.monotonic() + 30
    while True:
        klass = node.plane.get("gatewayclass", GATEWAY_CLASS)
        gateway = node.plane.get("-n", GATEWAY_NAMESPACE, "gateway", GATEWAY_NAME)
        accepted = {c["type"]: c["status"] for c in klass.get("status", {}).get("conditions", [])}
        programmed = {
            c["type"]: c["status"] for c in gateway.get("status", {}).get("conditions", [])
        }
        if accepted.get("Accepted") == "True" and programmed.get("Programmed") == "True":
            break
        assert time.monotonic() < deadline, (klass.get("status"), gateway.get("status"))
        time.sleep(0.5)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_route_is_admitted_by_the_api_server(node: Node, overlay: str) -> None:
    """A server-side dry run: the CRDs' schemas and their CEL rules, which only the API server
    runs (tests/deploy checks the schemas alone)."""
    values = overlay_values(overlay)
    if not values.get("api", {}).get("host"):
        values["api"] = copy.deepcopy(API_VALUES)
    objects = [o for o in render_chart(values)
               if o["apiVersion"].startswith("gateway.networking.k8s.io")]  # fmt: skip
    assert objects
    # The release's namespace is this module's own: test_chart_on_node.py's `userapi` may
    # still be terminating.
    for obj in objects:
        if obj["metadata"].get("namespace", "userapi") == "userapi":
            obj["metadata"]["namespace"] = NAMESPACE
    for namespace in {o["metadata"]["namespace"] for o in objects}:
        if node.plane.kubectl("get", "namespace", namespace, check=False).returncode != 0:
            node.plane.kubectl("create", "namespace", namespace)
    for obj in objects:
        result = node.plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                                    input=json.dumps(obj), check=False)  # fmt: skip
        assert result.returncode == 0, (overlay, obj["kind"], result.stderr)
