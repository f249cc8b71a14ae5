"""Every endpoint's pods, and the migration Job's, sit behind a NetworkPolicy: in, only Knative's
data path on queue-proxy's ports; out, only DNS, PostgreSQL, Redis and HTTPS. Judged by a small
evaluator of the NetworkPolicy semantics (a pod no policy selects accepts and opens anything,
as every pod did before), and each policy by the Kubernetes schema; tests/cluster applies them
to the real API server with everything else the chart and overlays render."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

import kubernetes_validate
import pytest
from userapi.endpoints import ENDPOINTS

from manifests.generate import overlay_values, render_chart
from tests.support.chart import KUBERNETES_VERSION, knative_services, render

NAMESPACE = "userapi"


@dataclass(frozen=True)
class Peer:
    """One end of a connection: a pod (namespace and labels) or an address outside the cluster."""

    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "203.0.113.7"


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # what the chart writes
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(rule_peer: dict[str, Any], peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        address = ipaddress.ip_address(peer.ip)
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if not peer.namespace:  # outside the cluster: only an ipBlock matches it
        return False
    namespace_labels = {"kubernetes.io/metadata.name": peer.namespace}
    if "namespaceSelector" in rule_peer:
        if not _matches(rule_peer["namespaceSelector"], namespace_labels):
            return False
    elif peer.namespace != NAMESPACE:
        return False
    return _matches(rule_peer.get("podSelector", {}), peer.labels)


def allowed(
    policies: list[dict[str, Any]],
    pod_labels: dict[str, str],
    direction: Literal["Ingress", "Egress"],
    peer: Peer,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether the pod with `pod_labels` in NAMESPACE may accept from (Ingress) or open to
    (Egress) `peer` on `port`: the union of the rules of the policies that select it."""
    selecting = [p for p in policies if _matches(p["spec"]["podSelector"], pod_labels)
                 and direction in p["spec"]["policyTypes"]]  # fmt: skip
    if not selecting:
        return True
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            ports = rule.get("ports") or [{"port": port, "protocol": protocol}]
            if not any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports):
                continue
            peers = rule.get(peers_key) or []
            if not peers or any(_peer_matches(p, peer) for p in peers):
                return True
    return False


def policies_of(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


def pod_labels(objects: list[dict[str, Any]], endpoint: str) -> dict[str, str]:
    labels = knative_services(objects)[endpoint]["spec"]["template"]["metadata"]["labels"]
    return dict(labels)


def job_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    job = next(o for o in objects if o["kind"] == "Job")
    return dict(job["spec"]["template"]["metadata"]["labels"])


ACTIVATOR = Peer("knative-serving", {"app": "activator"}, "10.8.0.5")
AUTOSCALER = Peer("knative-serving", {"app": "autoscaler"}, "10.8.0.6")
KOURIER = Peer("kourier-system", {"app": "3scale-kourier-gateway"}, "10.8.1.5")
ATTACKER_POD = Peer("default", {"app": "compromised"}, "10.8.2.9")
SAME_NAMESPACE_POD = Peer(NAMESPACE, {"app": "something-else"}, "10.8.2.10")
KUBE_DNS = Peer("kube-system", {"k8s-app": "kube-dns"}, "10.8.3.10")
METADATA_SERVER = Peer(ip="169.254.169.254")
INTERNET = Peer(ip="203.0.113.7")


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_only_knatives_data_path_reaches_an_endpoint(endpoint: str) -> None:
    objects = render({"redis": {"url": "redis://cache:6379/0"}})
    policies, labels = policies_of(objects), pod_labels(objects, endpoint)
    # Before, no policy selected the pods: any pod of the cluster could call the app directly,
    # around the ingress, and scrape or probe queue-proxy.
    for attacker in (ATTACKER_POD, SAME_NAMESPACE_POD, INTERNET):
        for port in (8012, 8013, 8022, 8080, 9090, 9091, 6432):
            assert not allowed(policies, labels, "Ingress", attacker, port), (attacker, port)
    for port in (8012, 8013):
        assert allowed(policies, labels, "Ingress", ACTIVATOR, port)
        assert allowed(policies, labels, "Ingress", KOURIER, port)
    assert allowed(policies, labels, "Ingress", AUTOSCALER, 9090)
    assert not allowed(policies, labels, "Ingress", KOURIER, 9090)
    # The app's own port and PgBouncer's are for queue-proxy and the app over localhost only.
    for port in (8080, 6432, 9091):
        assert not allowed(policies, labels, "Ingress", ACTIVATOR, port)


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_an_endpoint_opens_only_dns_its_stores_and_https(endpoint: str) -> None:
    objects = render({"redis": {"url": "redis://cache:6379/0"}})
    policies, labels = policies_of(objects), pod_labels(objects, endpoint)
    assert allowed(policies, labels, "Egress", KUBE_DNS, 53, "UDP")
    assert allowed(policies, labels, "Egress", KUBE_DNS, 53, "TCP")
    assert not allowed(policies, labels, "Egress", ATTACKER_POD, 53, "UDP")
    assert allowed(policies, labels, "Egress", INTERNET, 443)
    for port in (5432, 6379):
        assert allowed(policies, labels, "Egress", Peer(ip="10.20.0.3"), port)
    # The rest is closed: the cloud metadata server, the Kubernetes API, SSH, plain HTTP.
    for peer, port in ((METADATA_SERVER, 80), (INTERNET, 80), (INTERNET, 22),
                       (Peer(ip="10.0.0.1"), 6443), (ATTACKER_POD, 8080)):  # fmt: skip
        assert not allowed(policies, labels, "Egress", peer, port), (peer, port)


def test_the_migration_job_accepts_nothing_and_reaches_only_dns_and_postgres() -> None:
    objects = render({"redis": {"url": "redis://cache:6379/0"}})
    policies, labels = policies_of(objects), job_labels(objects)
    assert not allowed(policies, labels, "Ingress", ACTIVATOR, 8012)
    assert allowed(policies, labels, "Egress", KUBE_DNS, 53, "UDP")
    assert allowed(policies, labels, "Egress", Peer(ip="10.20.0.3"), 5432)
    for port in (443, 6379, 80):
        assert not allowed(policies, labels, "Egress", INTERNET, port)


def test_each_policy_selects_one_component_of_its_release() -> None:
    objects = render({"endpoints": {"listUsers": {"enabled": False}}})
    policies = policies_of(objects)
    components = {p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                  for p in policies}  # fmt: skip
    assert components == (set(ENDPOINTS) - {"list-users"}) | {"migrate"}
    for policy in policies:
        assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "demo"
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    assert not policies_of(render({"networkPolicies": {"create": False}}))


@pytest.mark.parametrize(
    ("overlay", "postgres", "redis", "redis_port", "pinned"),
    [
        ("gke", "10.20.0.3", "10.20.0.4", 6379, True),
        ("eks", "192.168.64.20", "192.168.80.20", 6379, True),
        # Public endpoints whose addresses are not fixed: open on their ports only.
        ("aks", "20.50.2.10", "20.50.3.10", 6380, False),
    ],
)
def test_cloud_overlays_open_only_their_managed_services(
    overlay: str, postgres: str, redis: str, redis_port: int, pinned: bool
) -> None:
    objects = render_chart(overlay_values(overlay))
    policies = policies_of(objects)
    for endpoint in ENDPOINTS:
        labels = pod_labels(objects, endpoint)
        assert allowed(policies, labels, "Egress", Peer(ip=postgres), 5432)
        assert allowed(policies, labels, "Egress", Peer(ip=redis), redis_port)
        # A server elsewhere on those ports (data sent to an attacker's "database") is refused
        # where the overlay knows the addresses; other ports are refused everywhere.
        assert allowed(policies, labels, "Egress", INTERNET, 5432) is not pinned
        assert allowed(policies, labels, "Egress", INTERNET, redis_port) is not pinned
        assert not allowed(policies, labels, "Egress", Peer(ip=redis), 6000)
    for policy in policies:
        kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)


def test_local_releases_reach_the_in_cluster_services_and_emulator() -> None:
    objects = render_chart(overlay_values("local"))
    policies = policies_of(objects)
    labels = pod_labels(objects, "get-user")
    for name, port in (("redis", 6379), ("postgres", 5432), ("auth0-emulator", 8765)):
        pod = Peer(NAMESPACE, {"app.kubernetes.io/name": name}, "10.8.4.4")
        assert allowed(policies, labels, "Egress", pod, port), name
        assert not allowed(policies, labels, "Egress", Peer(ip="10.8.4.4"), port), name
    assert not allowed(policies, labels, "Egress", INTERNET, 8765)


def test_extra_rules_and_a_metrics_scraper_are_added_where_asked() -> None:
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    gateway = {"ipBlock": {"cidr": "192.0.2.0/24"}}
    objects = render({"networkPolicies": {"metricsFrom": [monitoring],
                                          "ingressNamespaces": ["istio-system"]},
                      "endpoints": {"auth0Events": {"networkPolicy": {"extraIngress": [
                          {"from": [gateway], "ports": [{"port": 8012}]}]}}}})  # fmt: skip
    policies = policies_of(objects)
    prometheus = Peer("monitoring", {"app": "prometheus"}, "10.8.5.5")
    istio = Peer("istio-system", {"app": "istio-ingressgateway"}, "10.8.6.6")
    for endpoint in ENDPOINTS:
        labels = pod_labels(objects, endpoint)
        assert allowed(policies, labels, "Ingress", prometheus, 9091)
        assert allowed(policies, labels, "Ingress", istio, 8012)
        assert not allowed(policies, labels, "Ingress", KOURIER, 8012)
        extra = allowed(policies, labels, "Ingress", Peer(ip="192.0.2.9"), 8012)
        assert extra is (endpoint == "auth0-events")
