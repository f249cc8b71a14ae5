"""The chart's whole life through real Helm (helm-python-sdk) against the real API server, with
Knative's webhook admitting and its controller reconciling: install with local values (the
migration hook Job runs on kwok's node and completes), upgrade one endpoint's max-scale into a
new Revision, roll back, uninstall leaving nothing behind. The tests run in file order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
from userapi.endpoints import ENDPOINTS

from harness.cluster import ControlPlane
from manifests.generate import deep_merge, overlay_values
from tests.support.chart import CHART
from tests.support.cluster import OFFLINE_IMAGES

pytestmark = pytest.mark.cluster

RELEASE, NAMESPACE = "demo", "helm-release"
MAX_SCALE = "autoscaling.knative.dev/max-scale"
LOCAL = deep_merge(overlay_values("local"), {
    **OFFLINE_IMAGES,
    "localBackingServices": {"enabled": True, "auth0Emulator": True},
    "devSecrets": {"create": True},
})  # fmt: skip


@pytest.fixture(scope="module")
def client(control_plane: ControlPlane) -> Iterator[helm.Config]:
    config = helm.Config(kubeconfig_path=control_plane.kubeconfig, namespace=NAMESPACE)
    yield config
    config.close()


def eventually(check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def service_max_scale(plane: ControlPlane, endpoint: str) -> str:
    service = plane.get("-n", NAMESPACE, "ksvc", endpoint)
    return str(service["spec"]["template"]["metadata"]["annotations"][MAX_SCALE])


def revision_max_scales(plane: ControlPlane, endpoint: str) -> dict[str, str]:
    revisions = plane.get("-n", NAMESPACE, "revisions.serving.knative.dev",
                          "-l", f"serving.knative.dev/service={endpoint}")["items"]  # fmt: skip
    return {r["metadata"]["name"]: r["metadata"]["annotations"][MAX_SCALE] for r in revisions}


def test_install_runs_the_migration_hook_and_creates_every_endpoint(
    control_plane: ControlPlane, client: helm.Config
) -> None:
    chart = helm.Chart.load(CHART)
    release = client.install(chart, RELEASE, LOCAL, namespace=NAMESPACE, create_namespace=True,
                             timeout=300)  # fmt: skip
    assert (release["status"], release["revision"]) == ("deployed", 1)
    # The hook Job was created, ran (kwok completes its pod) and succeeded before install returned.
    hooks = {h["name"]: h for h in client.get_all(RELEASE)["hooks"]}
    assert hooks[f"{RELEASE}-migrate"]["last_run"]["phase"] == "Succeeded"
    services = control_plane.get("-n", NAMESPACE, "ksvc")["items"]
    assert {s["metadata"]["name"] for s in services} == set(ENDPOINTS)
    eventually(lambda: revision_max_scales(control_plane, "get-user") == {"get-user-00001": "10"})


def test_upgrade_moves_one_max_scale_into_a_new_revision(
    control_plane: ControlPlane, client: helm.Config
) -> None:
    values = deep_merge(LOCAL, {"endpoints": {"getUser": {"maxScale": 7}}})
    release = client.upgrade(helm.Chart.load(CHART), RELEASE, values, namespace=NAMESPACE,
                             timeout=300)  # fmt: skip
    assert (release["status"], release["revision"]) == ("deployed", 2)
    assert service_max_scale(control_plane, "get-user") == "7"

    def revisions() -> None:
        assert revision_max_scales(control_plane, "get-user") == {
            "get-user-00001": "10", "get-user-00002": "7"}  # fmt: skip

    eventually(revisions)
    # Only that endpoint changed: the others keep their one revision.
    assert revision_max_scales(control_plane, "list-users") == {"list-users-00001": "10"}


def test_rollback_restores_the_previous_max_scale(
    control_plane: ControlPlane, client: helm.Config
) -> None:
    client.rollback(RELEASE, version=1, timeout=300)
    assert client.status(RELEASE)["revision"] == 3
    assert service_max_scale(control_plane, "get-user") == "10"
    eventually(lambda: revision_max_scales(control_plane, "get-user")["get-user-00003"] == "10")


def test_uninstall_leaves_no_object_of_the_release(
    control_plane: ControlPlane, client: helm.Config
) -> None:
    client.uninstall(RELEASE, timeout=300)
    kinds = control_plane.kubectl(
        "api-resources", "--verbs=list", "--namespaced", "-o", "name"
    ).stdout.split()
    # What every namespace has, and events (kept for an hour by design).
    expected = {("ServiceAccount", "default"), ("ConfigMap", "kube-root-ca.crt")}

    def nothing_left() -> None:
        listed = json.loads(control_plane.kubectl(
            "get", "-n", NAMESPACE, ",".join(k for k in kinds if not k.startswith("events")),
            "-o", "json", "--ignore-not-found").stdout or '{"items": []}')  # fmt: skip
        left = {(o["kind"], o["metadata"]["name"]) for o in listed["items"]}
        assert left <= expected, sorted(left - expected)

    eventually(nothing_left)
    with pytest.raises(helm.HelmError):
        client.status(RELEASE)
