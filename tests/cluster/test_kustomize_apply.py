"""Every kustomize overlay, applied server-side with the built kubectl to the real API server
(schemas, CEL rules and Knative's webhook all judge it), then a changed copy applied with
--dry-run=server: accepted and shown changed when valid, refused when the change breaks a rule,
and in neither case written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cluster import ControlPlane
from tests.deploy.test_manifests import OVERLAYS

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "userapi"  # every overlay's kustomization sets it
MAX_SCALE = "autoscaling.knative.dev/max-scale"


def built(plane: ControlPlane, overlay: str) -> list[dict[str, Any]]:
    out = plane.kubectl("kustomize", str(ROOT / "manifests" / "overlays" / overlay)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def get_user(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "get-user"
                and o["apiVersion"].startswith("serving.knative.dev"))  # fmt: skip


def live_max_scale(plane: ControlPlane) -> str:
    service = plane.get("-n", NAMESPACE, "ksvc", "get-user")
    return str(service["spec"]["template"]["metadata"]["annotations"][MAX_SCALE])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_applies_server_side_and_dry_runs_a_change(
    control_plane: ControlPlane, overlay: str
) -> None:
    path = str(ROOT / "manifests" / "overlays" / overlay)
    try:
        control_plane.kubectl("apply", "-k", path, "--server-side", timeout=300)
        objects = built(control_plane, overlay)
        for obj in objects:
            args = [
                obj["kind"].lower() + "." + obj["apiVersion"].split("/")[0]
                if "/" in obj["apiVersion"]
                else obj["kind"].lower(),
                obj["metadata"]["name"],
            ]
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
        control_plane.kubectl("delete", "-k", path, "--ignore-not-found", "--wait=true",
                              timeout=300, check=False)  # fmt: skip
        control_plane.kubectl("wait", "--for=delete", f"namespace/{NAMESPACE}", "--timeout=240s",
                              timeout=300, check=False)  # fmt: skip
