"""Every kustomize overlay, applied server-side with the built kubectl to the real API server
(schemas, CEL rules and Knative's webhook all judge it), then a changed copy applied with
--dry-run=server: accepted and shown changed when valid, refused when the change breaks a rule,
and in neither case written."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cluster import ControlPlane
from harness.cluster.node import install_gateway_crds
from tests.support.chart import OVERLAYS

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "userapi"  # every overlay's kustomization sets it
MAX_SCALE = "autoscaling.knative.dev/max-scale"
# The Secrets docs/deploying.md has the operator create (the cloud overlays' Redis URL too).
SECRETS = {
    "userapi-auth0": ("client-secret", "events-secret"),
    "userapi-postgres": ("password",),
    "userapi-redis": ("redis-url",),
    "userapi-shared-cache": ("shared-cache-key",),
}


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of manifests/ with the cloud overlays' placeholders filled in, as an operator does
    before applying (docs/deploying.md): a digest `docker push` printed and a project name. As
    shipped, Knative's webhook refuses them (no valid image reference), which is the point."""
    copy = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(ROOT / "manifests", copy)
    digest = hashlib.sha256(b"userapi").hexdigest()
    for kustomization in copy.glob("overlays/*/kustomization.yaml"):
        text = kustomization.read_text().replace("YOUR_IMAGE_DIGEST", digest)
        kustomization.write_text(text.replace("YOUR_PROJECT", "my-project"))
        assert "YOUR_" not in kustomization.read_text(), kustomization
    return copy


def built(plane: ControlPlane, manifests: Path, overlay: str) -> list[dict[str, Any]]:
    out = plane.kubectl("kustomize", str(manifests / "overlays" / overlay)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def get_user(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "get-user"
                and o["apiVersion"].startswith("serving.knative.dev"))  # fmt: skip


def live_max_scale(plane: ControlPlane) -> str:
    service = plane.get("-n", NAMESPACE, "ksvc", "get-user")
    return str(service["spec"]["template"]["metadata"]["annotations"][MAX_SCALE])


def apply_as_documented(plane: ControlPlane, manifests: Path, overlay: str) -> None:
    """docs/deploying.md: the local overlay in one apply; a cloud overlay after the namespace and
    the Secrets exist, the schema (migration Job) first, then the endpoints."""
    path = str(manifests / "overlays" / overlay)
    if overlay == "local":
        plane.kubectl("apply", "-k", path, "--server-side", timeout=300)
        return
    plane.kubectl("create", "namespace", NAMESPACE)
    for secret, keys in SECRETS.items():
        literals = [f"--from-literal={key}={secrets.token_hex(16)}" for key in keys]
        plane.kubectl("-n", NAMESPACE, "create", "secret", "generic", secret, *literals)
    guide = (ROOT / "docs" / "deploying.md").read_text()
    endpoints = next(line.split("=", 1)[1] for line in guide.splitlines()
                     if line.startswith("ENDPOINTS="))  # fmt: skip
    schema_first = f"app.kubernetes.io/component notin ({endpoints})"
    plane.kubectl("apply", "-k", path, "--server-side", "-l", schema_first, timeout=300)
    # kwok's node completes the Job's pod, the Job controller marks it complete.
    plane.kubectl("-n", NAMESPACE, "wait", "--for=condition=complete", "job/userapi-migrate",
                  "--timeout=180s", timeout=200)  # fmt: skip
    plane.kubectl("apply", "-k", path, "--server-side", timeout=300)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_applies_server_side_and_dry_runs_a_change(
    control_plane: ControlPlane, manifests: Path, overlay: str
) -> None:
    # The cloud overlays route one API host with Gateway API objects, whose CRDs the cloud's
    # Gateway controller brings (docs/deploying.md); the session's plane gets the pinned ones.
    install_gateway_crds(control_plane)
    try:
        apply_as_documented(control_plane, manifests, overlay)
        objects = built(control_plane, manifests, overlay)
        for obj in objects:
            kind, version = obj["kind"].lower(), obj["apiVersion"]
            args = [f"{kind}.{version.split('/')[0]}" if "/" in version else kind,
                    obj["metadata"]["name"]]  # fmt: skip
            if obj["kind"] != "Namespace":
                args[:0] = ["-n", NAMESPACE]
            assert control_plane.kubectl("get", *args, check=False).returncode == 0, args
        before = live_max_scale(control_plane)

        changed = get_user(objects)
        changed["spec"]["template"]["metadata"]["annotations"][MAX_SCALE] = "3"
        result = control_plane.kubectl("apply", "--server-side", "--dry-run=server", "-o", "json",
                                       "-f", "-", input=json.dumps(changed))  # fmt: skip
        shown = json.loads(result.stdout)["spec"]["template"]["metadata"]["annotations"]
        assert shown[MAX_SCALE] == "3"
        assert live_max_scale(control_plane) == before  # a dry run writes nothing

        changed["spec"]["template"]["metadata"]["annotations"][MAX_SCALE] = "-1"
        refused = control_plane.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-",
                                        input=json.dumps(changed), check=False)  # fmt: skip
        assert refused.returncode != 0
        assert "denied the request" in refused.stderr, refused.stderr
    finally:
        # The overlays share a namespace: each leaves it gone for the next.
        control_plane.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found",
                              "--timeout=240s", timeout=300, check=False)  # fmt: skip
