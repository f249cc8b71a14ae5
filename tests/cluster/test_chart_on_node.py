"""The project's own chart on the real node (conftest.py's `real_node`): `helm install` with the
local profile's values into a namespace that enforces Pod Security `restricted`; the six
Knative Services turn Ready with app, PgBouncer and queue-proxy run by the node's runc, beside
the in-cluster Redis, PostgreSQL and Auth0 emulator, after the migration Job; every endpoint
answers by its Knative URL through Traefik, its writes land in the emulator and in PostgreSQL;
then each scales to zero and get-user back from it.

The images reach the node without a registry (harness/cluster/chart_images.py): the userapi
image built from this tree as `make image` builds it, and stand-ins for PgBouncer, Redis and
PostgreSQL. Requests go only to the ingress and to a loopback port-forward, and only while the
node's namespace exists. Timings are printed (`-s`) as `chart on node: {...}`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import helm_python as helm
import pytest
from userapi.domain.users import user_path
from userapi.endpoints import ENDPOINTS

from harness.cluster import ControlPlane
from harness.cluster.chart_images import load_chart_images
from harness.cluster.node import NODE_NAME, node_dir
from harness.emulator import EmulatorHandle, cloud_event
from harness.processes import USERAPI
from manifests.generate import deep_merge, overlay_values
from tests.support.chart import CHART, ROOT
from tests.support.real_node import Node, pods, ready

pytestmark = pytest.mark.cluster

# The local values' Auth0 domain names the emulator's Service in this namespace.
NAMESPACE = RELEASE = "userapi"
EMULATOR_URL = f"http://auth0-emulator.{NAMESPACE}.svc.cluster.local:8765"
WINDOW = "6s"  # the shortest autoscaling window Knative accepts
CONTAINERS = {"app", "pgbouncer", "queue-proxy"}
ADA = "auth0|64f1c2a9e4b0a1b2c3d4e5f6"  # a seed user of the emulator
ADMIN = "auth0|chartonnodeadmin00000000"
PERMISSIONS = ["read:users", "create:users", "update:users", "delete:users"]


@dataclass
class Release:
    node: Node
    emulator: EmulatorHandle
    hosts: dict[str, str]  # endpoint -> its Knative URL's host
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def plane(self) -> ControlPlane:
        return self.node.plane

    def call(
        self, endpoint: str, method: str, path: str, token: str | None = None,
        body: Any = None, headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        """A request by the endpoint's URL through Traefik; (status, parsed JSON or None)."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        status, text, _ = self.node.call(self.hosts[endpoint], path, method=method, body=data,
                                         headers=sent, timeout=120)  # fmt: skip
        return status, json.loads(text) if text else None

    def sql(self, query: str) -> list[str]:
        """psql in the in-cluster PostgreSQL's pod (kubectl exec through the kubelet)."""
        result = self.plane.kubectl(
            "exec", "-n", NAMESPACE, "deployment/postgres", "--", "psql", "-U", "userapi",
            "-d", "userapi", "-AtX", "-c", query,
        )  # fmt: skip
        return result.stdout.splitlines()

    def redis(self, *command: str) -> str:
        """redis-cli in the in-cluster Redis's pod."""
        return self.plane.kubectl(
            "exec", "-n", NAMESPACE, "deployment/redis", "--", "redis-cli", *command
        ).stdout.strip()

    def admin(self) -> str:
        return self.emulator.token(ADMIN, PERMISSIONS)

    def in_auth0(self, user_id: str) -> Any:
        """The user as the emulator's Management API has it."""
        return self.emulator.http.get(
            "/api/v2/users/" + quote(user_id, safe=""),
            headers={"Authorization": f"Bearer {self.emulator.management_token()}"},
        )


def services(plane: ControlPlane) -> dict[str, dict[str, Any]]:
    listed = plane.get("-n", NAMESPACE, "ksvc")["items"]
    return {s["metadata"]["name"]: s for s in listed}


def restricted_namespace(plane: ControlPlane) -> None:
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }},
    }  # fmt: skip
    plane.kubectl("apply", "-f", "-", input=json.dumps(namespace))


@pytest.fixture(scope="module")
def release(real_node: Node) -> Iterator[Release]:
    assert not real_node.is_down, "the real node was taken down before this module ran"
    plane = real_node.plane
    measured: dict[str, float] = {}
    images = load_chart_images(plane, measured)
    values = deep_merge(overlay_values("local"), {
        **images,
        "devSecrets": {"create": True},
        # Idle pods go within seconds: the test waits for zero, not for Knative's 60 s.
        "podAnnotations": {"autoscaling.knative.dev/window": WINDOW},
    })  # fmt: skip
    restricted_namespace(plane)
    client = helm.Config(kubeconfig_path=plane.kubeconfig, namespace=NAMESPACE)
    forwarding = contextlib.ExitStack()
    emulator: EmulatorHandle | None = None
    try:
        started = time.monotonic()
        installed = client.install(helm.Chart.load(CHART), RELEASE, values, namespace=NAMESPACE,
                                   timeout=600)  # fmt: skip
        assert installed["status"] == "deployed"
        measured["helm install (hook Job included)"] = time.monotonic() - started
        deadline = started + 600
        while True:
            found = services(plane)
            if len(found) == len(ENDPOINTS) and all(ready(s) for s in found.values()):
                break
            assert time.monotonic() < deadline, {
                name: s.get("status", {}).get("conditions") for name, s in found.items()
            }
            time.sleep(1)
        measured["install to all six Ready"] = time.monotonic() - started
        hosts = {name: s["status"]["url"].split("://", 1)[1] for name, s in found.items()}
        port = forwarding.enter_context(plane.port_forward(NAMESPACE, "svc/auth0-emulator", 8765))
        emulator = EmulatorHandle(f"http://127.0.0.1:{port}", public_url=EMULATOR_URL)
        yield Release(real_node, emulator, hosts, measured)
    finally:
        if emulator is not None:
            emulator.close()
        forwarding.close()
        client.close()
        # The namespace goes with everything in it, and once it is terminating nothing can
        # recreate a pod in it: the pods are then told to stop within a second rather than
        # their revisions' 60 s (the node's teardown kills whatever would still be left).
        plane.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)
        plane.kubectl("delete", "pods", "--all", "-n", NAMESPACE, "--grace-period=1",
                      "--wait=false", check=False)  # fmt: skip
        print(f"\nchart on node: {json.dumps({k: round(v, 2) for k, v in measured.items()})}")


def runc_containers(node: Node) -> dict[str, str]:
    """Container id -> status, from the node's runc state (containerd's runc root per
    namespace)."""
    root = node_dir(node.state) / "runc" / "k8s.io"
    listed = subprocess.run(["runc", "--root", str(root), "list", "--format", "json"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {c["id"]: c["status"] for c in json.loads(listed or "[]")}


def test_install_makes_six_ready_services_on_the_node_under_restricted(release: Release) -> None:
    plane = release.plane
    assert set(services(plane)) == set(ENDPOINTS)
    # The namespace enforces restricted: a pod asking for root is refused by the API server,
    # so every pod that runs here was admitted under it.
    labels = plane.get("namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    refused = plane.kubectl(
        "run", "root-probe", "-n", NAMESPACE, "--image", "kind.local/userapi:dev",
        "--dry-run=server", "--overrides", json.dumps({"spec": {"securityContext": {
            "runAsUser": 0}}}), check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr, refused.stderr
    running = runc_containers(release.node)
    revision_pods = {}
    for pod in pods(plane, NAMESPACE):
        endpoint = pod["metadata"]["labels"].get("serving.knative.dev/service")
        if endpoint:
            assert endpoint not in revision_pods, f"two pods of {endpoint}"
            revision_pods[endpoint] = pod
    assert set(revision_pods) == set(ENDPOINTS)
    for endpoint, pod in revision_pods.items():
        assert pod["spec"]["nodeName"] == NODE_NAME
        assert {c["name"] for c in pod["spec"]["containers"]} == CONTAINERS, endpoint
        statuses = pod["status"]["containerStatuses"]
        for status in statuses:
            container_id = status["containerID"].removeprefix("containerd://")
            assert running.get(container_id) == "running", (endpoint, status["name"])
    # The backing services and the emulator: Deployments on the same node.
    for name in ("redis", "postgres", "auth0-emulator"):
        deployment = plane.get("-n", NAMESPACE, "deployment", name)
        assert deployment["status"].get("readyReplicas") == 1, name
    # The migration hook Job ran against the in-cluster PostgreSQL.
    assert release.sql("SELECT count(*) > 0 FROM schema_migrations") == ["t"]


def test_every_endpoint_answers_by_url_through_traefik(release: Release) -> None:
    admin = release.admin()
    # Traefik calls a KIngress ready without probing it: a 404 may come first, briefly.
    started = time.monotonic()
    while (got := release.call("get-user", "GET", user_path(ADA), admin))[0] == 404:
        assert time.monotonic() - started < 10, got
        time.sleep(0.1)
    release.measured["all Ready to first get-user 200"] = time.monotonic() - started
    status, profile = got
    assert status == 200, profile
    assert profile["user_id"] == ADA
    assert profile["email"] == "ada@example.com"

    status, listed = release.call("list-users", "GET", "/users?q=email:ada@example.com", admin)
    assert status == 200, listed
    assert [u["user_id"] for u in listed["users"]] == [ADA]
    # The pods share the in-cluster Redis: the profile cache and the sealed credentials.
    assert int(release.redis("dbsize")) > 0

    email = f"chart-{secrets.token_hex(4)}@example.com"
    status, created = release.call("create-user", "POST", "/users", admin, body={
        "email": email, "password": "Str0ng-passw0rd!", "name": "Chart Person", "plan": "team",
    })  # fmt: skip
    assert status == 201, created
    user_id = created["user_id"]
    assert release.in_auth0(user_id).json()["email"] == email
    assert release.sql(f"SELECT plan FROM accounts WHERE user_id = '{user_id}'") == ["team"]

    status, updated = release.call("update-user", "PATCH", user_path(user_id), admin,
                                   body={"name": "Renamed On Node"})  # fmt: skip
    assert status == 200, updated
    assert updated["name"] == "Renamed On Node"
    assert release.in_auth0(user_id).json()["name"] == "Renamed On Node"

    status, _ = release.call("delete-user", "DELETE", user_path(user_id), admin)
    assert status == 204
    assert release.in_auth0(user_id).status_code == 404
    audit = release.sql(
        f"SELECT action FROM audit_log WHERE target_user_id = '{user_id}' ORDER BY occurred_at"
    )
    assert audit == ["create", "update", "delete"]

    # auth0-events with the Log Stream's shared secret (the dev Secret's, read from the
    # cluster): a delivery about the seed user is accepted and applied.
    secret = release.plane.kubectl(
        "get", "secret", "-n", NAMESPACE, "userapi-auth0", "-o", "jsonpath={.data.events-secret}"
    ).stdout
    events_secret = base64.b64decode(secret).decode()
    profile_now = release.call("get-user", "GET", user_path(ADA), admin)[1]
    event = cloud_event("user.updated", profile_now)
    status, result = release.call("auth0-events", "POST", "/events/auth0", events_secret,
                                  body=event)  # fmt: skip
    assert status == 200, result
    assert result["received"] == 1

    # A bad token: 401 in the API's error shape, from the app behind Traefik and queue-proxy.
    status, error = release.call("get-user", "GET", user_path(ADA), "not-a-token")
    assert status == 401
    assert set(error) == {"error", "message", "request_id"}


def test_each_endpoint_scales_to_zero_and_get_user_back(release: Release) -> None:
    from userapi.commands.cluster_status import Cluster

    plane = release.plane
    cluster = Cluster(NAMESPACE, str(plane.kubeconfig))
    idle_from = time.monotonic()
    deadline = idle_from + 240
    while any(row.pods for row in cluster.status()):
        assert time.monotonic() < deadline, [(r.name, r.pods) for r in cluster.status()]
        time.sleep(1)
    release.measured["idle to all six at zero"] = time.monotonic() - idle_from
    shown = subprocess.run(
        [USERAPI, "cluster", "status", "-n", NAMESPACE, "--kubeconfig", str(plane.kubeconfig)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    table = [line.split() for line in shown.splitlines()]
    assert table[0][:3] == ["ENDPOINT", "READY", "PODS"]
    assert {row[0]: (row[1], row[2]) for row in table[1:]} == {
        name: ("yes", "0") for name in ENDPOINTS
    }

    # At zero: the activator holds the request while a pod starts (app, PgBouncer,
    # queue-proxy), then it is answered.
    admin = release.admin()
    started = time.monotonic()
    status, profile = release.call("get-user", "GET", user_path(ADA), admin)
    release.measured["get-user from zero to 200"] = time.monotonic() - started
    assert status == 200, profile
    assert profile["user_id"] == ADA
    assert [row.pods for row in cluster.status() if row.name == "get-user"] == [1]


def requests_by_revision(plane: ControlPlane, service: str, path: str) -> Counter[str]:
    """How many requests for `path` each revision's app logged (its pods' request lines, which
    hold the path decoded, as ASGI gives it)."""
    decoded = unquote(path)
    served: Counter[str] = Counter()
    selector = f"serving.knative.dev/service={service}"
    for pod in plane.get("-n", NAMESPACE, "pods", "-l", selector)["items"]:
        revision = pod["metadata"]["labels"]["serving.knative.dev/revision"]
        logs = plane.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"], "-c", "app",
                             check=False).stdout  # fmt: skip
        for raw in logs.splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if line.get("message") == "request" and line.get("path") == decoded:
                    served[revision] += 1
    return served


def test_get_user_splits_50_50_between_two_revisions(release: Release) -> None:
    """A second revision of get-user (a template annotation changed) with the first pinned at
    50 %: both answer through Traefik, each within ±10 % of 200 requests (counted in the
    apps' own request logs, so the count is what each revision served)."""
    plane = release.plane
    first = services(plane)["get-user"]["status"]["latestReadyRevisionName"]
    patch = {"spec": {
        "template": {"metadata": {"annotations": {"userapi.test/release": "second"}}},
        "traffic": [{"revisionName": first, "percent": 50},
                    {"latestRevision": True, "percent": 50}],
    }}  # fmt: skip
    plane.kubectl("patch", "ksvc", "get-user", "-n", NAMESPACE, "--type", "merge",
                  "-p", json.dumps(patch))  # fmt: skip
    deadline = time.monotonic() + 240
    while True:
        found = services(plane)["get-user"]
        status = found.get("status", {})
        split = sorted((t["revisionName"], t["percent"]) for t in status.get("traffic", []))
        fresh = status.get("observedGeneration") == found["metadata"]["generation"]
        if fresh and ready(found) and len(split) == 2:
            break
        assert time.monotonic() < deadline, json.dumps(status, indent=1)
        time.sleep(1)
    second = status["latestReadyRevisionName"]
    assert split == sorted([(first, 50), (second, 50)])

    admin, path = release.admin(), user_path(ADA)
    earlier = requests_by_revision(plane, "get-user", path)  # the tests before this one's
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: release.call("get-user", "GET", path, admin)[0],
                                range(200)))  # fmt: skip
    assert Counter(answers) == {200: 200}
    # Read soon (a line is written just after its answer): idle pods go after the 6 s window
    # and grace, and their logs with them.
    time.sleep(1)
    served = requests_by_revision(plane, "get-user", path) - earlier
    release.measured["get-user 50/50 split"] = served[second]
    assert set(served) == {first, second}, served
    for revision in (first, second):
        assert 90 <= served[revision] <= 110, served


def test_knative_bench_smoke_on_this_release(release: Release, tmp_path: Path) -> None:
    """`make bench`'s knative scenario, smoke-sized, on this node and this release
    (USERAPI_BENCH_CLUSTER) rather than on a cluster of its own, which would cost minutes more:
    scale from zero through the ingress against the hello Service, with the pod watch's
    breakdown; warm through Traefik, queue-proxy and the app; scale-out. Last in the module:
    it moves all of get-user's traffic to its latest revision."""

    def autoscaling() -> dict[str, str]:
        template = services(release.plane)["get-user"]["spec"]["template"]
        return {key: value for key, value in template["metadata"].get("annotations", {}).items()
                if key.startswith("autoscaling.knative.dev/")}  # fmt: skip

    before = autoscaling()
    env = {**os.environ, "USERAPI_BENCH_CLUSTER": str(release.node.state)}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--profile", "smoke", "--only", "knative",
         "--output", str(tmp_path), "--no-docs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    knative = json.loads((tmp_path / "results.json").read_text())["scenarios"]["knative"]
    assert all(row["min_ms"] > 0 for row in knative["cold_start"].values())
    for name in ("get-user", "hello"):
        # The activator logged the request before its pod existed (it asks for the pod), and
        # the watch saw that pod through every phase, in order. The kubelet's reports of its
        # containers running and Ready may arrive after the 200 (the activator follows
        # queue-proxy's own probe), never before the scheduling they depend on.
        for seen in knative["cold_start_breakdown"][name]["runs"]:
            assert set(seen) == {"activator received", "pod created", "scheduled",
                                 "containers started", "ready", "200"}  # fmt: skip
            assert 0 <= seen["activator received"] < seen["pod created"]
            assert seen["pod created"] <= seen["scheduled"] < seen["200"]
            assert seen["scheduled"] < seen["containers started"] <= seen["ready"]
    assert knative["cold_start_cache"] == {"hit": knative["runs"]}  # Redis had the profile
    for level in knative["warm"]["levels"]:
        for row in level["paths"].values():
            assert row["get-user"]["errors"] == row["hello"]["errors"] == 0
            assert min(row["get-user"]["rps"], row["hello"]["rps"]) > 0
    assert knative["scale_out"]["seconds_to_all_serving"] > 0
    assert knative["scale_out"]["errors"] == 0
    # It put back what it changed: no hello Service, get-user's own autoscaling annotations.
    deadline = time.monotonic() + 60
    while "hello" in services(release.plane):  # deleted without waiting for it to go
        assert time.monotonic() < deadline, "the hello Service was left behind"
        time.sleep(1)
    assert autoscaling() == before
