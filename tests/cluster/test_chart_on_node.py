"""The project's own chart on the real node (conftest.py's `real_node`): `helm install` with the
local profile's values into a namespace that enforces Pod Security `restricted`; the six
Knative Services turn Ready with app, PgBouncer and queue-proxy run by the node's runc, beside
the in-cluster Redis, PostgreSQL and Auth0 emulator, after the migration Job; every endpoint
answers by its Knative URL through Traefik, its writes land in the emulator and in PostgreSQL;
then each scales to zero and get-user back from it.

The release has its one API host too (`api.host`, docs/architecture.md "One API host"): the
chart's HTTPRoute on the node's Gateway (Traefik's Gateway API provider) sends each operation
of the OpenAPI document to Knative's cluster-local ingress with the Host rewritten. Every
operation answers there as on its endpoint's own host; what the contract lacks is the gateway's
404; a Service at zero is woken through it. Then a release as docs/deploying.md walks it, by
`helm upgrade` of the chart's values: a 90/10 canary of get-user over 1,000 requests, its tag
URLs, promotion and `helm rollback` under light load. Which revision answered is read from the
apps' own request lines, found by the request id each request was sent with.

The images reach the node without a registry (harness/cluster/chart_images.py): the userapi
image built from this tree as `make image` builds it, and stand-ins for PgBouncer, Redis and
PostgreSQL. Requests go only to the ingress and to a loopback port-forward, and only while the
node's namespace exists. Timings are printed (`-s`) as `chart on node: {...}`.
"""

from __future__ import annotations

import base64
import contextlib
import copy
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
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import helm_python as helm
import pytest
from userapi.domain.users import user_path
from userapi.endpoints import ENDPOINTS

from harness.cluster import ControlPlane
from harness.cluster.chart_images import load_chart_images
from harness.cluster.node import GATEWAY_PORT, NODE_NAME, node_dir, served_weights
from harness.emulator import EmulatorHandle, cloud_event
from harness.processes import USERAPI
from manifests.generate import deep_merge, overlay_values
from tests.support.chart import CHART, ROOT
from tests.support.real_node import API_HOST, API_VALUES, Load, Node, pods, ready

pytestmark = pytest.mark.cluster

# The local values' Auth0 domain names the emulator's Service in this namespace.
NAMESPACE = RELEASE = "userapi"
EMULATOR_URL = f"http://auth0-emulator.{NAMESPACE}.svc.cluster.local:8765"
WINDOW = "6s"  # the shortest autoscaling window Knative accepts
CONTAINERS = {"app", "pgbouncer", "queue-proxy"}
ADA = "auth0|64f1c2a9e4b0a1b2c3d4e5f6"  # a seed user of the emulator
ADMIN = "auth0|chartonnodeadmin00000000"
PERMISSIONS = ["read:users", "create:users", "update:users", "delete:users"]
# get-user's revisions are named by the release (`revisionSuffix`), so that `helm rollback`
# returns to the very revision: Knative reuses a named revision whose spec is unchanged, where
# an unnamed template would make a new one.
FIRST, SECOND = "get-user-v1", "get-user-v2"
CANARY = [
    {"revisionName": FIRST, "percent": 90, "tag": "current"},
    {"revisionName": SECOND, "percent": 10, "tag": "candidate"},
]


@dataclass
class Release:
    node: Node
    emulator: EmulatorHandle
    client: helm.Config
    hosts: dict[str, str]  # endpoint -> its Knative URL's host
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def plane(self) -> ControlPlane:
        return self.node.plane

    def call(
        self, to: str, method: str, path: str, token: str | None = None,
        body: Any = None, headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:  # fmt: skip
        """A request through Traefik `to` an endpoint (by its Knative URL's host) or a host:
        API_HOST (the one host, on the node's Gateway) or a tag's. (status, the body parsed as
        JSON, or as text when it is not JSON: the gateway's own 404; None when empty)."""
        host = self.hosts.get(to, to)
        port = GATEWAY_PORT if host == API_HOST else None
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        status, text, _ = self.node.call(host, path, method=method, body=data, headers=sent,
                                         port=port, timeout=120)  # fmt: skip
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

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

    def events_secret(self) -> str:
        """The Log Stream's shared secret auth0-events checks (the dev Secret's)."""
        secret = self.plane.kubectl(
            "get", "secret", "-n", NAMESPACE, "userapi-auth0", "-o",
            "jsonpath={.data.events-secret}",
        ).stdout  # fmt: skip
        return base64.b64decode(secret).decode()

    def upgrade(self, values: dict[str, Any]) -> list[tuple[str, int]]:
        """`helm upgrade --reuse-values` with `values` (the migration hook runs again); then
        get-user's split, once Knative has made it."""
        chart = helm.Chart.load(CHART)
        upgraded = self.client.upgrade(chart, RELEASE, values, namespace=NAMESPACE,
                                       reuse_values=True, timeout=300)  # fmt: skip
        assert upgraded["status"] == "deployed", upgraded
        return get_user_split(self.plane)

    def rollback(self, version: int) -> list[tuple[str, int]]:
        """`helm rollback` to `version`; then get-user's split, once Knative has made it."""
        self.client.rollback(RELEASE, version=version, timeout=300)
        return get_user_split(self.plane)

    def in_auth0(self, user_id: str) -> Any:
        """The user as the emulator's Management API has it."""
        return self.emulator.http.get(
            "/api/v2/users/" + quote(user_id, safe=""),
            headers={"Authorization": f"Bearer {self.emulator.management_token()}"},
        )


def services(plane: ControlPlane) -> dict[str, dict[str, Any]]:
    listed = plane.get("-n", NAMESPACE, "ksvc")["items"]
    return {s["metadata"]["name"]: s for s in listed}


def get_user_split(plane: ControlPlane, timeout: float = 240) -> list[tuple[str, int]]:
    """get-user's traffic once the Service is Ready at its current generation and Traefik
    serves it: (revision, percent) pairs, sorted. Traefik marks the KIngress Ready up to a
    throttle before the new split is live (a CI run counted 134 of 1,000 on a 10 % candidate:
    its first requests still met the previous 50/50), so the wait ends on Traefik's API."""
    deadline = time.monotonic() + timeout
    while True:
        found = services(plane)["get-user"]
        status = found.get("status", {})
        if status.get("observedGeneration") == found["metadata"]["generation"] and ready(found):
            split = sorted((t["revisionName"], t.get("percent", 0)) for t in status["traffic"])
            break
        assert time.monotonic() < deadline, json.dumps(status, indent=1)
        time.sleep(0.5)
    # The default and cluster-local rules carry the split; each tag's rule is a lone 100.
    expected = sorted(percent for _, percent in split if percent)
    while True:
        weights = served_weights(plane, NAMESPACE, "get-user")
        if expected in weights and all(w in (expected, [100]) for w in weights):
            return split
        assert time.monotonic() < deadline, (expected, weights)
        time.sleep(0.1)


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
        "api": copy.deepcopy(API_VALUES),
        "endpoints": {"getUser": {"revisionSuffix": FIRST.removeprefix("get-user-")}},
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
        yield Release(real_node, emulator, client, hosts, measured)
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
        # The one host goes at once, not with the namespace (a later module may route
        # API_HOST), and its ReferenceGrant is in Knative's ingress namespace, not the release's.
        ingress = API_VALUES["knativeIngress"]["namespace"]
        plane.kubectl("delete", "httproute", "-n", NAMESPACE, f"{RELEASE}-api", "--wait=false",
                      check=False)  # fmt: skip
        plane.kubectl("delete", "referencegrant", "-n", ingress, f"{RELEASE}-{NAMESPACE}-api",
                      "--wait=false", check=False)  # fmt: skip
        rounded = {k: round(v, 2) if isinstance(v, float) else v for k, v in measured.items()}
        print(f"\nchart on node: {json.dumps(rounded)}")


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
    profile_now = release.call("get-user", "GET", user_path(ADA), admin)[1]
    event = cloud_event("user.updated", profile_now)
    status, result = release.call("auth0-events", "POST", "/events/auth0",
                                  release.events_secret(), body=event)  # fmt: skip
    assert status == 200, result
    assert result["received"] == 1

    # A bad token: 401 in the API's error shape, from the app behind Traefik and queue-proxy.
    status, error = release.call("get-user", "GET", user_path(ADA), "not-a-token")
    assert status == 401
    assert set(error) == {"error", "message", "request_id"}


# What two answers of one operation may differ in: made per request, or per user.
VOLATILE = {"request_id", "created_at", "updated_at"}


def comparable(body: Any, user_id: str, email: str) -> Any:
    """`body` with the user a run created named by placeholders, VOLATILE keys left out."""
    text = json.dumps(body).replace(email, "<email>").replace(user_id.split("|", 1)[1], "<id>")

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(text))


def every_operation(
    release: Release, email: str, admin: str, *, one_host: bool
) -> dict[tuple[str, str], tuple[int, Any]]:
    """Each operation once, through the one host or each by its endpoint's own host: the seed
    user read and searched for, then a user created (with `email`), renamed, sent an event
    about, and deleted. (status, comparable body) by (method, path template)."""
    answers = {}

    def record(endpoint: str, method: str, template: str, path: str, token: str,
               body: Any = None) -> Any:  # fmt: skip
        answers[method, template] = release.call(API_HOST if one_host else endpoint, method,
                                                 path, token, body=body)  # fmt: skip
        return answers[method, template][1]

    record("get-user", "GET", "/users/{user_id}", user_path(ADA), admin)
    record("list-users", "GET", "/users", "/users?q=email:ada@example.com", admin)
    created = record("create-user", "POST", "/users", "/users", admin, body={
        "email": email, "password": "Str0ng-passw0rd!", "name": "One Host", "plan": "team",
    })  # fmt: skip
    assert answers["POST", "/users"][0] == 201, created
    user_id = created["user_id"]
    renamed = record("update-user", "PATCH", "/users/{user_id}", user_path(user_id), admin,
                     body={"name": "One Host Renamed"})  # fmt: skip
    record("auth0-events", "POST", "/events/auth0", "/events/auth0", release.events_secret(),
           body=cloud_event("user.updated", renamed))  # fmt: skip
    record("delete-user", "DELETE", "/users/{user_id}", user_path(user_id), admin)
    return {op: (status, comparable(body, user_id, email))
            for op, (status, body) in answers.items()}  # fmt: skip


def test_every_operation_answers_through_the_one_host_as_on_its_own(release: Release) -> None:
    from userapi.commands.openapi import merged_spec

    route = release.plane.get("-n", NAMESPACE, "httproute", f"{RELEASE}-api")
    (parent,) = route["status"]["parents"]
    conditions = {c["type"]: c["status"] for c in parent["conditions"]}
    assert conditions == {"Accepted": "True", "ResolvedRefs": "True"}, parent
    # Both ways side by side, so that each operation meets its endpoint in the same state (a
    # pod woken from zero once for both). The same local part: the emulator makes the nickname
    # from it.
    local, admin = f"one-host-{secrets.token_hex(4)}", release.admin()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        one = pool.submit(every_operation, release, f"{local}@one.example.com", admin,
                          one_host=True)  # fmt: skip
        own = pool.submit(every_operation, release, f"{local}@own.example.com", admin,
                          one_host=False)  # fmt: skip
        through_one, on_their_own = one.result(), own.result()
    release.measured["every operation, both ways"] = time.monotonic() - started
    document = {(method.upper(), path) for path, operations in merged_spec()["paths"].items()
                for method in operations}  # fmt: skip
    assert set(through_one) == document
    assert through_one == on_their_own
    assert {op: status for op, (status, _) in through_one.items()} == {
        ("GET", "/users/{user_id}"): 200, ("GET", "/users"): 200, ("POST", "/users"): 201,
        ("PATCH", "/users/{user_id}"): 200, ("POST", "/events/auth0"): 200,
        ("DELETE", "/users/{user_id}"): 204,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/nothing"), ("PUT", "/users"), ("POST", "/users/x"),
     ("PUT", "/users/x"), ("GET", "/healthz"), ("GET", "/openapi.json")],
)  # fmt: skip
def test_what_the_contract_lacks_is_the_gateways_404(
    release: Release, method: str, path: str
) -> None:
    """Gateway API has no 405: a method a path does not have matches no rule either."""
    got = release.call(API_HOST, method, path, release.admin())
    assert got == (404, "404 page not found\n")  # Traefik's own: no endpoint saw it


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/users/a/b"), ("DELETE", "/users"), ("PATCH", "/users")]
)
def test_what_a_path_prefix_also_matches_is_the_endpoints_404(
    release: Release, method: str, path: str
) -> None:
    """Gateway API's `PathPrefix /users/` matches whole path elements with the trailing slash
    ignored: `/users/a/b`, and `/users` itself, which only GET and POST match exactly. Those
    reach get-user, delete-user and update-user, which answer their own JSON 404."""
    status, error = release.call(API_HOST, method, path, release.admin())
    assert status == 404
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

    # Through the one host: the route goes by Knative's ingress, which hands requests for a
    # Service at zero to the activator. Ten at once, every one answered.
    assert [row.pods for row in cluster.status() if row.name == "list-users"] == [0]
    search = partial(release.call, API_HOST, "GET", "/users?q=email:ada@example.com", admin)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = Counter(status for status, _ in pool.map(lambda _: search(), range(10)))
    release.measured["10 list-users from zero through the one host"] = time.monotonic() - started
    assert answers == {200: 10}


def requests_by_revision(
    plane: ControlPlane, service: str, request_id: str, expected: int
) -> Counter[str]:
    """How many request lines with `request_id` each revision's app logged, waiting up to 5 s
    for `expected` in all (a line is written just after its answer). Read soon: an idle pod
    goes after the 6 s window and grace, and its log with it."""
    deadline = time.monotonic() + 5
    selector = f"serving.knative.dev/service={service}"
    while True:
        served: Counter[str] = Counter()
        for pod in plane.get("-n", NAMESPACE, "pods", "-l", selector)["items"]:
            revision = pod["metadata"]["labels"]["serving.knative.dev/revision"]
            logs = plane.kubectl("logs", "-n", NAMESPACE, pod["metadata"]["name"], "-c", "app",
                                 check=False).stdout  # fmt: skip
            for raw in logs.splitlines():
                if request_id in raw:
                    with contextlib.suppress(ValueError):
                        line = json.loads(raw)
                        if line.get("message") == "request" and line["request_id"] == request_id:
                            served[revision] += 1
        if sum(served.values()) >= expected or time.monotonic() > deadline:
            return served
        time.sleep(0.2)


def ask(release: Release, count: int, to: str = API_HOST) -> tuple[Counter[int], Counter[str]]:
    """`count` get-user requests for the seed user `to` the one host (or get-user's or a tag's
    host), eight
    at a time, all with one new request id: their statuses, and the revisions that served
    them (by their apps' request lines)."""
    request_id = f"ask-{secrets.token_hex(8)}"
    get = partial(release.call, to, "GET", user_path(ADA), release.admin(),
                  headers={"X-Request-Id": request_id})  # fmt: skip
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = Counter(status for status, _ in pool.map(lambda _: get(), range(count)))
    return statuses, requests_by_revision(release.plane, "get-user", request_id, statuses[200])


def all_on(release: Release, revision: str, timeout: float = 60) -> None:
    """Waits until a batch through the one host is served by `revision` alone (Traefik takes a
    changed KIngress within its 100 ms throttle), then asks 100 more: all of them too."""
    deadline = time.monotonic() + timeout
    while (batch := ask(release, 20)) != (Counter({200: 20}), Counter({revision: 20})):
        assert time.monotonic() < deadline, batch
    assert ask(release, 100) == (Counter({200: 100}), Counter({revision: 100}))


def test_get_user_splits_50_50_between_two_revisions(release: Release) -> None:
    """A second revision of get-user, named by `revisionSuffix`, and half the traffic on each
    (a `helm upgrade`): both answer by get-user's Knative URL through Traefik, each within
    ±10 % of 200 requests, counted in the apps' own request lines."""
    fifty = [{**target, "percent": 50} for target in CANARY]
    started = time.monotonic()
    split = release.upgrade({"endpoints": {"getUser": {"revisionSuffix": "v2",
                                                       "traffic": fifty}}})  # fmt: skip
    release.measured["helm upgrade to a second revision at 50/50, Ready"] = (
        time.monotonic() - started
    )
    assert split == [(FIRST, 50), (SECOND, 50)]
    statuses, served = ask(release, 200, to="get-user")
    release.measured["get-user 50/50 of 200"] = dict(served)
    assert statuses == {200: 200}
    assert sum(served.values()) == 200, served
    for revision in (FIRST, SECOND):
        assert 90 <= served[revision] <= 110, served


def test_a_90_10_canary_set_by_helm_upgrade_holds_through_the_one_host(release: Release) -> None:
    """As docs/deploying.md's release: the second revision (named by `revisionSuffix`) gets 10
    % of get-user's requests, the first is pinned at 90 %, each tagged; ±3 % over 1,000."""
    started = time.monotonic()
    split = release.upgrade({"endpoints": {"getUser": {"revisionSuffix": "v2",
                                                       "traffic": CANARY}}})  # fmt: skip
    release.measured["helm upgrade to the canary, Ready"] = time.monotonic() - started
    assert split == [(FIRST, 90), (SECOND, 10)]
    started = time.monotonic()
    statuses, served = ask(release, 1000)
    release.measured["1000 through the one host"] = time.monotonic() - started
    release.measured["canary 90/10 of 1000"] = dict(served)
    assert statuses == {200: 1000}
    assert sum(served.values()) == 1000, served
    assert abs(served[SECOND] - 100) <= 30, served


def test_a_tag_url_reaches_only_its_revision(release: Release) -> None:
    traffic = services(release.plane)["get-user"]["status"]["traffic"]
    hosts = {t["tag"]: t["url"].split("://", 1)[1] for t in traffic if t.get("tag")}
    assert hosts == {"current": f"current-{release.hosts['get-user']}",
                     "candidate": f"candidate-{release.hosts['get-user']}"}  # fmt: skip
    for tag, revision in (("candidate", SECOND), ("current", FIRST)):
        assert ask(release, 50, hosts[tag]) == (Counter({200: 50}), Counter({revision: 50})), tag


def test_promotion_and_rollback_lose_no_request(release: Release) -> None:
    """`helm upgrade` to 100 % on the candidate, then `helm rollback` to the install: each
    ends with every request on the right revision, and two light clients through the one host
    meanwhile get no failed answer (the rollback's revision is at zero by then: the activator
    holds their requests while it starts)."""
    headers = {"Authorization": f"Bearer {release.admin()}", "X-Request-Id": "light-load"}
    light = partial(Load, release.node, API_HOST, user_path(ADA), clients=2, pause=0.05,
                    port=GATEWAY_PORT, headers=headers)  # fmt: skip
    started = time.monotonic()
    with light() as promotion:
        assert release.upgrade({"endpoints": {"getUser": {"traffic": []}}}) == [(SECOND, 100)]
        all_on(release, SECOND)
    release.measured["promotion: upgrade to all on v2"] = time.monotonic() - started
    release.measured["promotion under load"] = dict(promotion.statuses)
    assert promotion.failures == [], promotion.failures[:5]
    started = time.monotonic()
    with light() as rollback:
        assert release.rollback(1) == [(FIRST, 100)]
        all_on(release, FIRST)
    release.measured["rollback: to all on v1"] = time.monotonic() - started
    release.measured["rollback under load"] = dict(rollback.statuses)
    assert rollback.failures == [], rollback.failures[:5]
    assert promotion.statuses[200] > 0
    assert rollback.statuses[200] > 0


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
