"""Every standard pod knob of the chart, set globally and overridden for one endpoint, is
admitted by the real kube-apiserver and Knative's own webhook (a server-side dry run: schema,
defaulting and validation), once Knative's feature flags allow the scheduling fields."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.cluster import ControlPlane
from harness.cluster.knative import configure
from tests.support.chart import every_knob, knative_services, render

pytestmark = pytest.mark.cluster

# Knative admits these revision fields only behind its config-features flags.
FLAGS = (
    "kubernetes.podspec-nodeselector",
    "kubernetes.podspec-tolerations",
    "kubernetes.podspec-affinity",
    "kubernetes.podspec-topologyspreadconstraints",
)


def _dry_run(plane: ControlPlane, namespace: str, obj: dict[str, Any]) -> tuple[bool, str]:
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    result = plane.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-",
        input=json.dumps(obj), check=False,
    )  # fmt: skip
    return result.returncode == 0, result.stderr


def _set_flags(plane: ControlPlane, value: str) -> None:
    configure(plane, "config-features", dict.fromkeys(FLAGS, value))


@pytest.fixture
def knobs_namespace(control_plane: ControlPlane, namespace: str) -> Iterator[str]:
    # The webhook dry-runs each revision's pod, which needs its ServiceAccount to exist: the
    # chart's own and the one get-user's override names.
    for obj in render(every_knob()):
        if obj["kind"] == "ServiceAccount":
            obj["metadata"]["namespace"] = namespace
            control_plane.kubectl("apply", "-f", "-", input=json.dumps(obj))
    control_plane.kubectl("-n", namespace, "create", "serviceaccount", "get-user-identity")
    yield namespace
    _set_flags(control_plane, "disabled")  # Knative's defaults, for the tests after this one


def test_every_knob_is_admitted_by_the_api_server_and_knatives_webhook(
    control_plane: ControlPlane, knobs_namespace: str
) -> None:
    objects = render(every_knob())
    services = knative_services(objects)
    # Without the flags Knative's webhook refuses the scheduling fields: it is judging.
    _set_flags(control_plane, "disabled")
    admitted, error = _dry_run(control_plane, knobs_namespace, services["get-user"])
    assert not admitted
    assert "nodeSelector" in error or "must not set the field(s)" in error, error

    _set_flags(control_plane, "enabled")
    # The webhook reads config-features through an informer: give it a moment to see the patch.
    deadline = time.monotonic() + 30
    while not (answer := _dry_run(control_plane, knobs_namespace, services["get-user"]))[0]:
        assert time.monotonic() < deadline, answer[1]
        time.sleep(0.5)

    refused = {}
    for obj in objects:
        if obj["kind"] == "ServiceAccount":
            continue  # applied above
        admitted, error = _dry_run(control_plane, knobs_namespace, obj)
        if not admitted:
            refused[f"{obj['kind']}/{obj['metadata']['name']}"] = error
    assert refused == {}
    kinds = {o["kind"] for o in objects}
    assert {"Service", "Job", "NetworkPolicy", "ConfigMap"} <= kinds
