"""One API host on the real node (docs/architecture.md, "One API host"): the chart's HTTPRoute,
rendered by the chart with the node's values, is served by Traefik's Gateway API provider (the
CRDs the pinned module ships) and sends each method and path to a Knative Service through
Knative's own ingress with the Host rewritten. So requests still take Knative's routing: a
Service at zero is woken by the activator, a 90/10 split between two revisions holds, a tag URL
reaches only its revision, and promotion and rollback lose no request.

The Services are the hello image's, named as two of userapi's endpoints (get-user, list-users),
and the route keeps the chart's rules for them with matches on the one path the hello image
serves (/cgi-bin/revision, which answers with the revision): GET to get-user, POST to
list-users, as `GET /users/{id}` and `POST /users` are split in the chart. Requests go only to
the node's namespace, and only while it exists.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import yaml

from harness.cluster import gateway_api
from harness.cluster.node import GATEWAY_CLASS, GATEWAY_NAME, GATEWAY_NAMESPACE, GATEWAY_PORT
from manifests.generate import overlay_values, render_chart
from tests.support.chart import OVERLAYS
from tests.support.real_node import (
    API_HOST,
    API_VALUES,
    Load,
    Node,
    deploy,
    hello_service,
    wait_for_zero,
)

pytestmark = pytest.mark.cluster

NAMESPACE = "one-host"
HOST = API_HOST
REVISION = "/cgi-bin/revision"
# The chart's values on this node (API_VALUES: the node's Gateway, Knative's ingress Traefik's
# cluster-local entry point).
VALUES = {
    "auth0": {"domain": "example.us.auth0.com", "audience": "https://api", "clientId": "m2m"},
    "database": {"host": "postgres"},
    "api": API_VALUES,
}
# The hello image's one path, in place of each endpoint's matches.
MATCHES = {
    "get-user": [{"path": {"type": "PathPrefix", "value": "/cgi-bin/"}, "method": "GET"}],
    "list-users": [{"path": {"type": "Exact", "value": REVISION}, "method": "POST"}],
}


@pytest.fixture(scope="module")
def node(real_node: Node) -> Node:
    assert not real_node.is_down, "the real node was taken down before this module ran"
    return real_node


def chart_route() -> list[dict[str, Any]]:
    """The chart's HTTPRoute and ReferenceGrant for release namespace NAMESPACE, its rules for
    get-user and list-users only, matching the hello image's path."""
    objects = render_chart(copy.deepcopy(VALUES), name="userapi")
    (route,) = [o for o in objects if o["kind"] == "HTTPRoute"]
    (grant,) = [o for o in objects if o["kind"] == "ReferenceGrant"]
    rules = []
    for rule in route["spec"]["rules"]:
        endpoint = rule["filters"][0]["urlRewrite"]["hostname"].split(".")[0]
        if endpoint in MATCHES:
            rewritten = f"{endpoint}.{NAMESPACE}.svc.cluster.local"
            rule["filters"][0]["urlRewrite"]["hostname"] = rewritten
            rules.append({**rule, "matches": MATCHES[endpoint]})
    assert len(rules) == 2
    route["spec"]["rules"] = rules
    route["metadata"]["namespace"] = NAMESPACE
    grant["spec"]["from"][0]["namespace"] = NAMESPACE
    return [route, grant]


def through_gateway(node: Node, path: str = REVISION, method: str = "GET") -> tuple[int, str]:
    status, body, _ = node.call(HOST, path, method=method, port=GATEWAY_PORT)
    return status, body


def ask(node: Node, requests: int, workers: int = 8) -> Counter[str]:
    """`requests` GETs through the one host; the revisions that answered, or the statuses."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        answers = list(pool.map(lambda _: through_gateway(node), range(requests)))
    return Counter(body.strip() if status == 200 else str(status) for status, body in answers)


@pytest.fixture(scope="module")
def routed(node: Node) -> Node:
    """get-user and list-users behind the chart's route, the route accepted by the gateway."""
    for name in MATCHES:
        deploy(node, hello_service(name, NAMESPACE))
    node.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(chart_route()))
    # Traefik applies the route, the grant and the ingress's endpoints as they come: until all
    # are in, the gateway answers 404 (no route) or 500 (a backend it may not use yet).
    deadline = time.monotonic() + 60
    while through_gateway(node)[0] != 200:
        assert time.monotonic() < deadline, "the route never answered"
        time.sleep(0.2)
    node.measured["route answering"] = round(60 - (deadline - time.monotonic()), 1)
    return node


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
        values["api"] = copy.deepcopy(VALUES["api"])
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


def test_each_method_reaches_its_service_as_on_its_own_host(routed: Node) -> None:
    node = routed
    assert through_gateway(node) == (200, "get-user-00001\n")
    assert through_gateway(node, method="POST") == (200, "list-users-00001\n")
    # The same answers as on the Services' own hosts (Knative's public ingress).
    assert node.call(f"get-user.{NAMESPACE}.example.com", REVISION)[:2] == (200, "get-user-00001\n")
    route = node.plane.get("-n", NAMESPACE, "httproute", "userapi-api")
    (parent,) = route["status"]["parents"]
    conditions = {c["type"]: c["status"] for c in parent["conditions"]}
    assert conditions == {"Accepted": "True", "ResolvedRefs": "True"}, parent


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/"), ("GET", "/users/me"), ("PUT", REVISION),
                         ("DELETE", REVISION), ("POST", "/cgi-bin/other")],
)  # fmt: skip
def test_what_the_route_does_not_have_is_the_gateways_404(
    routed: Node, method: str, path: str
) -> None:
    status, body = through_gateway(routed, path, method)
    assert (status, body) == (404, "404 page not found\n")  # Traefik's own, no Service's


def test_a_service_at_zero_is_woken_through_the_one_host(routed: Node) -> None:
    node = routed
    node.measured["scaled to zero"] = round(wait_for_zero(node, NAMESPACE), 1)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: through_gateway(node), range(20)))
    node.measured["20 at zero through the one host"] = round(time.monotonic() - started, 2)
    assert Counter(answers) == {(200, "get-user-00001\n"): 20}


def _split(node: Node, traffic: list[dict[str, Any]], release: str) -> None:
    annotations = {"autoscaling.knative.dev/min-scale": "1", "release": release}
    deploy(node, hello_service("get-user", NAMESPACE, annotations, traffic=traffic))


CANARY = [
    {"revisionName": "get-user-00001", "percent": 90, "tag": "current"},
    {"latestRevision": True, "percent": 10, "tag": "candidate"},
]


def test_a_90_10_canary_holds_through_the_one_host(routed: Node) -> None:
    node = routed
    # A second revision (min-scale 1), 10 % of the requests; 00001 keeps 90 %.
    _split(node, CANARY, "second")
    traffic = node.plane.get("-n", NAMESPACE, "ksvc", "get-user")["status"]["traffic"]
    assert sorted((t["revisionName"], t["percent"]) for t in traffic) == [
        ("get-user-00001", 90), ("get-user-00002", 10)]  # fmt: skip
    served = ask(node, 1000)
    node.measured["canary 90/10 of 1000"] = dict(served)
    assert set(served) == {"get-user-00001", "get-user-00002"}, served
    assert abs(served["get-user-00002"] - 100) <= 30, served


def test_a_tag_url_reaches_only_its_revision(routed: Node) -> None:
    node = routed
    for tag, revision in (("candidate", "get-user-00002"), ("current", "get-user-00001")):
        host = f"{tag}-get-user.{NAMESPACE}.example.com"
        answers = Counter(node.call(host, REVISION)[:2] for _ in range(50))
        assert answers == {(200, f"{revision}\n"): 50}, (tag, answers)


def test_promotion_and_rollback_lose_no_request(routed: Node) -> None:
    node = routed
    with Load(node, HOST, REVISION, clients=2, pause=0.05, port=GATEWAY_PORT) as promotion:
        node.plane.kubectl("patch", "ksvc", "get-user", "-n", NAMESPACE, "--type", "merge", "-p",
                           json.dumps({"spec": {"traffic": [
                               {"latestRevision": True, "percent": 100}]}}))  # fmt: skip
        deadline = time.monotonic() + 60
        while ask(node, 20, workers=2) != {"get-user-00002": 20}:
            assert time.monotonic() < deadline, "never promoted"
        time.sleep(1)
    node.measured["promotion under load"] = dict(promotion.statuses)
    assert promotion.failures == [], promotion.failures[:5]
    with Load(node, HOST, REVISION, clients=2, pause=0.05, port=GATEWAY_PORT) as rollback:
        node.plane.kubectl("patch", "ksvc", "get-user", "-n", NAMESPACE, "--type", "merge", "-p",
                           json.dumps({"spec": {"traffic": [
                               {"revisionName": "get-user-00001", "percent": 100}]}}))  # fmt: skip
        deadline = time.monotonic() + 60
        while ask(node, 20, workers=2) != {"get-user-00001": 20}:
            assert time.monotonic() < deadline, "never rolled back"
        time.sleep(1)
    node.measured["rollback under load"] = dict(rollback.statuses)
    assert rollback.failures == [], rollback.failures[:5]
    assert ask(node, 100) == {"get-user-00001": 100}
