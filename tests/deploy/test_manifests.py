"""manifests/ is generated from the chart, and every overlay builds into valid objects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from userapi.endpoints import ENDPOINTS

from manifests.generate import overlay_values, render_chart
from tests.support import gateway, knative_rules
from tests.support.chart import OVERLAYS, build_overlay

ROOT = Path(__file__).resolve().parents[2]


def test_manifests_are_generated_from_the_current_chart() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "manifests" / "generate.py"), "--check"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_builds_into_valid_objects(overlay: str) -> None:
    objects = build_overlay(overlay)
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"
                and o["apiVersion"].startswith("serving.knative.dev")}  # fmt: skip
    assert set(services) == set(ENDPOINTS)
    for service in services.values():
        assert knative_rules.problems(service) == []
        image = service["spec"]["template"]["spec"]["containers"][0]["image"]
        assert not image.startswith("ghcr.io/userapi/"), "the overlay's registry must apply"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "userapi"
        if obj["apiVersion"].startswith(gateway.GROUP):
            assert gateway.schema_problems(obj) == [], obj["kind"]
            continue
        if not obj["apiVersion"].startswith("serving.knative.dev"):
            kubernetes_validate.validate(obj, "1.32", strict=True)


def _without_images(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_images(v) for k, v in obj.items() if k != "image"}
    if isinstance(obj, list):
        return [_without_images(v) for v in obj]
    return obj


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_builds_into_what_the_chart_renders_with_its_values(overlay: str) -> None:
    built = {(o["kind"], o["metadata"]["name"]): o for o in build_overlay(overlay)}
    rendered = render_chart(overlay_values(overlay))
    assert rendered
    # The grant goes to Knative's ingress namespace, applied on its own (the kustomization's
    # namespace would move it): it is that file, as rendered.
    grants = [o for o in rendered if o["kind"] == "ReferenceGrant"]
    grant_file = ROOT / "manifests" / "overlays" / overlay / "generated-reference-grant.yaml"
    if grants:
        assert [d for d in yaml.safe_load_all(grant_file.read_text()) if d] == grants
    else:
        assert not grant_file.exists()
    for obj in rendered:
        key = (obj["kind"], obj["metadata"]["name"])
        if obj["kind"] == "ReferenceGrant":
            continue
        assert key in built, key
        # The kustomization sets the namespace, and its `images:` moves images to its registry.
        expected = {**obj, "metadata": {**obj["metadata"], "namespace": "userapi"}}
        assert _without_images(built[key]) == _without_images(expected), key


def test_cloud_overlays_point_everything_at_their_own_endpoints() -> None:
    for overlay in ("gke", "eks", "aks"):
        objects = build_overlay(overlay)
        config = next(o for o in objects if o["metadata"]["name"] == "userapi-config")["data"]
        ini = next(o for o in objects if o["metadata"]["name"] == "userapi-pgbouncer")["data"]
        job = next(o for o in objects if o["kind"] == "Job")
        job_env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "host=postgres " not in ini["pgbouncer.ini"]
        assert "@postgres:" not in job_env["DATABASE_URL"]["value"]
        services = [o for o in objects if o["apiVersion"].startswith("serving.knative.dev")]
        if "REDIS_URL" in config:
            assert config["REDIS_URL"] != "redis://redis:6379/0"
        else:  # from a Secret, in every endpoint
            for service in services:
                env = service["spec"]["template"]["spec"]["containers"][0]["env"]
                assert {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {
                    "name": "userapi-redis", "key": "redis-url"}}} in env  # fmt: skip
        account = next(o for o in objects if o["kind"] == "ServiceAccount")
        assert account["metadata"]["annotations"], f"{overlay}: workload identity annotation"
        assert "Secret" not in {o["kind"] for o in objects}


def test_the_local_overlay_brings_its_backing_services_behind_network_policies() -> None:
    objects = build_overlay("local")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("Deployment", "redis"), ("Deployment", "postgres"), ("Deployment", "auth0-emulator"),
            ("NetworkPolicy", "redis-from-userapi"),
            ("NetworkPolicy", "postgres-from-userapi")} <= kinds  # fmt: skip
    for obj in objects:
        if obj["kind"] == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                assert container["securityContext"]["runAsNonRoot"] is True
                assert container["resources"]["limits"]


def test_the_documented_schema_first_apply_selects_all_but_the_endpoints() -> None:
    # docs/deploying.md applies `-l "app.kubernetes.io/component notin ($ENDPOINTS)"` first,
    # waits for the migration Job, then applies the rest: kustomize has no hook order.
    guide = (ROOT / "docs" / "deploying.md").read_text()
    documented = next(
        line.split("=", 1)[1] for line in guide.splitlines() if line.startswith("ENDPOINTS=")
    )
    assert documented.split(",") == list(ENDPOINTS)
    for overlay in OVERLAYS:
        first = {
            (o["kind"], o["metadata"]["name"])
            for o in build_overlay(overlay)
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") not in ENDPOINTS
        }
        assert ("Job", "userapi-migrate") in first
        assert ("ConfigMap", "userapi-config") in first
        assert not any(kind == "Service" and name in ENDPOINTS for kind, name in first)
