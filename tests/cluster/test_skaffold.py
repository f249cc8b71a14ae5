"""`skaffold run -p local` against the real node (conftest.py's `real_node`), as a developer runs
it after `make cluster`: the images built by `make image` (podman) and imported into the
node's containerd by the same build command (`LOAD=skaffold`: the node has no registry), the
chart installed by skaffold's one deployer, Helm, with the backing services, the emulator and
the dev Secrets from the chart, the migration hook after them, every Knative Service admitted
by Knative's own webhook, and nothing applied twice. skaffold's status check is on: the run
ends only once what it deployed is ready, and then every Knative Service is Ready."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from userapi.endpoints import ENDPOINTS

from harness.cluster import ControlPlane
from harness.skaffold import Skaffold
from tests.support.real_node import Node, ready
from tests.support.skaffold_node import (
    NAMESPACE,
    delete_release,
    skaffold_env,
    wait_namespace_gone,
)

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def control_plane(real_node: Node) -> ControlPlane:
    """This module's cluster: the real node's (the session's kwok plane is not used here)."""
    assert not real_node.is_down, "the real node was taken down before this module ran"
    return real_node.plane


@pytest.fixture(scope="module")
def deployed(
    real_node: Node, skaffold_engine: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Skaffold, str]]:
    plane = real_node.plane
    wait_namespace_gone(plane)
    tmp = tmp_path_factory.mktemp("skaffold-run")
    tool = Skaffold.create(tmp, kubeconfig_path=plane.kubeconfig)
    env = skaffold_env(tool, real_node, skaffold_engine)
    started = time.monotonic()
    try:
        # The context (`userapi`, make cluster's) is named neither like kind nor like
        # minikube: -p local says what it is.
        result = tool.run("run", "-p", "local", "--port-forward=off", env=env, timeout=1800,
                          offline=False)  # fmt: skip
        print(f"\nskaffold run -p local: {time.monotonic() - started:.1f} s")
        yield tool, result.stdout + result.stderr
    finally:
        delete_release(tool, plane, env)


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


def test_every_knative_service_was_admitted_and_is_ready_when_run_ends(
    deployed: tuple[Skaffold, str], control_plane: ControlPlane
) -> None:
    services = control_plane.get("-n", NAMESPACE, "services.serving.knative.dev")["items"]
    assert {s["metadata"]["name"] for s in services} == set(ENDPOINTS)
    assert [s["metadata"]["name"] for s in services if not ready(s)] == []
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
    # Named by its image id (skaffold's tag for a build it does not push), as imported.
    repository, image_id = image.split(":")
    assert repository == "dev.local/userapi"
    assert len(image_id) == 64, image


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
    # Each imported into the node under the name skaffold deployed.
    assert output.count("--for-skaffold --state") == 2
    assert output.count("loaded as dev.local/userapi") == 2
