"""`skaffold run -p local` against the real control plane (harness/cluster.py): the images built
by `make image` (podman), the chart installed by skaffold's one deployer, Helm, with the backing
services, the emulator and the dev Secrets from the chart, the migration hook after them (it
completes on kwok's node), every Knative Service admitted by Knative's own webhook and reconciled
by its controller, and nothing applied twice. No kubelet here: pods are kwok's, nothing runs in
them, so file sync (skaffold dev) cannot be exercised."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from userapi.endpoints import ENDPOINTS

from harness.cluster import ControlPlane
from harness.podman import Podman
from harness.podman import available as podman_available
from harness.skaffold import Skaffold, docker_api

pytestmark = pytest.mark.cluster

NAMESPACE = "userapi"  # the release's, from skaffold.yaml


@pytest.fixture(scope="module")
def deployed(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Skaffold, str]]:
    assert podman_available() is None, podman_available()
    tmp = tmp_path_factory.mktemp("skaffold-run")
    tool = Skaffold.create(tmp / "skaffold", kubeconfig_path=control_plane.kubeconfig)
    with Podman(tmp / "podman") as podman, docker_api(podman) as engine:
        env = {**engine, "NO_PROXY": f"127.0.0.1,localhost,{control_plane.address}"}
        # The context is named neither like kind nor like minikube: -p local says what it is.
        # No status check: it waits for the backing Deployments' pods, which only kwok runs
        # here (and Knative Services are not in it, docs/deploying.md).
        result = tool.run("run", "-p", "local", "--port-forward=off", "--status-check=false",
                          env=env, timeout=1800, offline=False)  # fmt: skip
        try:
            yield tool, result.stdout + result.stderr
        finally:
            tool.run("delete", "-p", "local", env=env, check=False, offline=False)
            control_plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


def helm(tool: Skaffold, *args: str) -> str:
    """The Helm skaffold drove, against the same cluster (the kubeconfig's only context)."""
    server = yaml.safe_load(tool.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    address = server.split("//")[1].rsplit(":", 1)[0]
    env = tool.env({"NO_PROXY": f"127.0.0.1,localhost,{address}"})
    result = subprocess.run(
        [str(tool.bin / "helm"), *args], env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def release_objects(tool: Skaffold) -> list[dict[str, Any]]:
    manifest = helm(tool, "get", "manifest", "userapi", "-n", NAMESPACE)
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def test_the_release_is_deployed_once_by_helm(
    deployed: tuple[Skaffold, str], control_plane: ControlPlane
) -> None:
    tool, _ = deployed
    (release,) = json.loads(helm(tool, "list", "-n", NAMESPACE, "-o", "json"))
    assert (release["name"], release["status"]) == ("userapi", "deployed")
    objects = release_objects(tool)
    keys = Counter((o["kind"], o["metadata"]["name"]) for o in objects)
    assert [key for key, count in keys.items() if count > 1] == []
    # The old configuration applied a second copy with kubectl into the default namespace.
    for kind in ("services.serving.knative.dev", "deployments", "secrets", "configmaps"):
        names = {o["metadata"]["name"] for o in control_plane.get("-n", "default", kind)["items"]}
        assert names.isdisjoint({name for (_, name) in keys}), kind
    # And every object in the namespace has one writer for its spec: Helm.
    for obj in objects:
        group = obj["apiVersion"].rpartition("/")[0]
        resource = f"{obj['kind'].lower()}.{group}" if group else obj["kind"].lower()
        live = control_plane.get("-n", NAMESPACE, resource, obj["metadata"]["name"])
        managers = {
            f["manager"] for f in live["metadata"].get("managedFields", [])
            if f.get("subresource") != "status"
        }  # fmt: skip
        assert not any(m.startswith("kubectl") for m in managers), (obj["metadata"], managers)


def test_every_knative_service_was_admitted_and_reconciled(
    deployed: tuple[Skaffold, str], control_plane: ControlPlane
) -> None:
    services = control_plane.get("-n", NAMESPACE, "services.serving.knative.dev")["items"]
    assert {s["metadata"]["name"] for s in services} == set(ENDPOINTS)
    for service in services:
        # Defaults only Knative's mutating webhook sets: it saw every Service.
        assert service["spec"]["traffic"] == [{"latestRevision": True, "percent": 100}]
        assert "serving.knative.dev/creator" in service["metadata"]["annotations"]
    revisions = control_plane.get("-n", NAMESPACE, "revisions.serving.knative.dev")["items"]
    assert {r["metadata"]["labels"]["serving.knative.dev/service"] for r in revisions} == set(
        ENDPOINTS
    )
    images = {r["spec"]["containers"][0]["image"] for r in revisions}
    (image,) = images  # one image, built by skaffold, for every endpoint
    assert image.startswith("dev.local/userapi:")


def test_the_migration_hook_ran_after_what_it_needs(
    deployed: tuple[Skaffold, str], control_plane: ControlPlane
) -> None:
    tool, _ = deployed
    manifest = helm(tool, "get", "hooks", "userapi", "-n", NAMESPACE)
    (job,) = [d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    kinds = {(o["kind"], o["metadata"]["name"]) for o in release_objects(tool)}
    assert {("Secret", "userapi-postgres"), ("Deployment", "postgres")} <= kinds


def test_the_emulator_runs_an_image_of_its_own(
    deployed: tuple[Skaffold, str], control_plane: ControlPlane
) -> None:
    emulator = control_plane.get("-n", NAMESPACE, "deployment", "auth0-emulator")
    (container,) = emulator["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("dev.local/userapi-emulator:")


def test_the_images_were_built_by_make_image(deployed: tuple[Skaffold, str]) -> None:
    _, output = deployed
    assert "harness/images.py --tag dev.local/userapi:" in output
    assert "harness/images.py --tag dev.local/userapi-emulator:" in output
