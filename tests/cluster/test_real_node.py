"""The real node (harness/cluster/node.py): a Knative Service turns Ready on kubelet, containerd
and runc, answers through Traefik at its Knative URL's host, scales to zero and back through the
activator; 100 requests at zero are all answered; the autoscaler scales out under load and back
down under light load, and a pod deleted under load loses no request (the drain Knative
documents); a 50/50 split between two revisions holds; then `down()` leaves the machine as it
found it. The Services run busybox's httpd with a CGI script that names the serving revision
(node_images.REVISION_CGI).

A control plane of its own (not the session's, which keeps kwok's fake node for the other
tests), shared with the other modules that need pods to run (conftest.py's `real_node`): its
teardown is part of what is tested, after every other test of it (conftest.py orders it last).
Requests go only to the ingress, in the namespace this control plane made, and only while that
namespace exists.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.cluster import down
from harness.cluster.cgroups import hierarchies
from harness.cluster.network import names
from harness.cluster.node import (
    NODE_NAME,
    SYSCTL_STAND_INS,
    cgroup_dirs,
    cgroup_pids,
    cgroup_root,
    holder_mount_namespace,
    pids_in_mount_namespace,
)
from harness.cluster.supervisor import recorded, start_time
from tests.support.real_node import (
    BODY,
    Load,
    Node,
    Snapshot,
    deploy,
    hello_service,
    pods,
    ready,
    serving_pods,
    sysctl_values,
    wait_for_zero,
)

pytestmark = pytest.mark.cluster

NAMESPACE = "hello"
SERVICE = "hello"
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


def in_other_root(pid: int, state: Path) -> bool:
    """Whether `pid` lives under another control plane's cgroup root (cgroups.py names them
    like their network namespaces, userapi-<hex>)."""
    ours = cgroup_root(state)
    try:
        paths = [line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().split()]
    except OSError:
        return True  # gone meanwhile
    return any(p.startswith("/userapi-") and not p.startswith(ours + "/") for p in paths)


@pytest.fixture(scope="module")
def node(real_node: Node) -> Node:
    assert not real_node.is_down, "the real node was taken down before this module ran"
    return real_node


def test_the_node_is_real_and_ready(node: Node) -> None:
    nodes = node.plane.get("nodes")["items"]
    assert [n["metadata"]["name"] for n in nodes] == [NODE_NAME]  # kwok's is retired
    (real,) = nodes
    assert ready(real)
    info = real["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.35.8"
    assert info["containerRuntimeVersion"].startswith("containerd://")
    # Knative's activator and autoscaler run on it as pods, from Knative's own Deployments.
    system = pods(node.plane, "knative-serving")
    on_node = {p["metadata"]["labels"].get("app"): p for p in system}
    for app in ("activator", "autoscaler"):
        assert ready(on_node[app]), app
        assert on_node[app]["spec"]["nodeName"] == NODE_NAME
    # kubectl logs reaches the kubelet (InternalIP, the API server's client certificate).
    logs = node.plane.kubectl("logs", "-n", "knative-serving", "deployment/activator",
                              "--tail", "50")  # fmt: skip
    assert "activator" in logs.stdout, logs.stdout[-2000:]


def test_kubelet_changed_no_machine_wide_setting(node: Node) -> None:
    assert sysctl_values() == node.before.sysctls
    stand_ins = node.state / "node" / "sysctl"
    for key, value in SYSCTL_STAND_INS.items():
        assert (stand_ins / key.replace("/", ".")).read_text().strip() == value
    # Pod cgroups are under the harness's root, in every hierarchy.
    assert any((Path(h) / cgroup_root(node.state).lstrip("/") / "kubepods").is_dir()
               for h in map(str, hierarchies()))  # fmt: skip


def test_a_knative_service_is_ready_called_by_url_scaled_to_zero_and_back(node: Node) -> None:
    plane = node.plane
    started = time.monotonic()
    ready_host = deploy(node, hello_service(SERVICE, NAMESPACE))
    node.measured["ksvc Ready"] = time.monotonic() - started
    found = plane.get("-n", NAMESPACE, "ksvc", SERVICE)
    url = found["status"]["url"]
    host = url.split("://", 1)[1]
    assert host == f"{SERVICE}.{NAMESPACE}.example.com"
    (pod,) = pods(plane, NAMESPACE)
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert {c["name"] for c in pod["spec"]["containers"]} == {"user-container", "queue-proxy"}

    assert ready_host == host
    assert node.call(host)[:2] == (200, BODY)
    status, body, seconds = node.call(host)
    assert (status, body) == (200, BODY)
    node.measured["warm request"] = seconds
    # kubectl exec streams through the API server to the kubelet, as logs does.
    exec_in_app = ("exec", "-n", NAMESPACE, pod["metadata"]["name"], "-c", "user-container")
    served = plane.kubectl(*exec_in_app, "--", "/bin/busybox", "cat", "/www/index.html")
    assert served.stdout == BODY
    # kubectl port-forward: a loopback port on this host to the pod's, through the kubelet.
    target = f"pod/{pod['metadata']['name']}"
    with plane.port_forward(NAMESPACE, target, 8080) as port:
        response = _http.open(f"http://127.0.0.1:{port}/", timeout=10)
        assert response.read().decode() == BODY
        response.close()
    # An unknown host is Traefik's 404, not the Service.
    assert node.call("nobody.example.com")[0] == 404

    # No traffic: the autoscaler takes the revision to zero pods.
    node.measured["scaled to zero after idle"] = wait_for_zero(node, NAMESPACE)

    # At zero: the activator holds the request while a pod starts, then it is answered.
    status, body, seconds = node.call(host)
    assert (status, body) == (200, BODY)
    node.measured["scale from zero"] = seconds
    assert len(pods(plane, NAMESPACE)) == 1
    print(f"\nreal node: {json.dumps(node.measured)}")


def test_100_concurrent_requests_at_zero_are_all_answered(node: Node) -> None:
    host = deploy(node, hello_service("burst", "burst"))
    node.measured["burst: scaled to zero after idle"] = wait_for_zero(node, "burst")
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(lambda _: node.call(host, "/cgi-bin/revision"), range(100)))
    node.measured["burst: 100 at zero answered"] = time.monotonic() - started
    node.measured["burst: slowest"] = max(seconds for _, _, seconds in answers)
    node.measured["burst: pods"] = len(pods(node.plane, "burst"))
    assert Counter(status for status, _, _ in answers) == {200: 100}, answers
    assert {body for _, body, _ in answers} == {"burst-00001\n"}


def test_scale_out_under_load_then_down_under_light_load_without_errors(node: Node) -> None:
    """Target concurrency 1 and requests held 0.5 s: six clients need more than one pod. Then
    one client, one request at a time: scale-down drains pods while it keeps calling."""
    plane, namespace = node.plane, "load"
    annotations = {"autoscaling.knative.dev/target": "1", "autoscaling.knative.dev/max-scale": "3"}
    host = deploy(node, hello_service("load", namespace, annotations))
    most, started = 0, time.monotonic()
    with Load(node, host, "/cgi-bin/revision?0.5", clients=6) as heavy:
        while time.monotonic() - started < 60 and most < 2:
            most = max(most, serving_pods(plane, namespace))
            time.sleep(0.5)
        node.measured["load: first second pod serving"] = time.monotonic() - started
        time.sleep(5)  # both pods take traffic for a while
        most = max(most, serving_pods(plane, namespace))
    assert most > 1, "never scaled out"
    node.measured["load: most pods"] = most
    node.measured["load: heavy"] = dict(heavy.statuses)
    assert heavy.failures == [], heavy.failures[:10]

    calm = time.monotonic()
    with Load(node, host, "/cgi-bin/revision?0.2", clients=1, pause=0.3) as light:
        while len(pods(plane, namespace)) > 1:  # terminating ones included: drained and gone
            assert time.monotonic() - calm < 150, "never scaled back to one pod"
            time.sleep(1)
    node.measured["load: back to one pod"] = time.monotonic() - calm
    node.measured["load: light"] = dict(light.statuses)
    assert light.failures == [], light.failures[:10]
    assert light.statuses[200] > 0


def test_a_pod_deleted_under_load_loses_no_request(node: Node) -> None:
    """The kubelet runs the user container's preStop hook (queue-proxy's /wait-for-drain, which
    Knative adds) before SIGTERM, and queue-proxy keeps serving while it drains; the Deployment
    starts a replacement meanwhile. So the client should see no error at all."""
    plane, namespace = node.plane, "drain"
    host = deploy(
        node, hello_service("drain", namespace, {"autoscaling.knative.dev/min-scale": "1"})
    )
    with Load(node, host, "/cgi-bin/revision?0.1", clients=2, pause=0.1) as load:
        time.sleep(2)
        (victim,) = [p["metadata"]["name"] for p in pods(plane, namespace)]
        deleted = time.monotonic()
        plane.kubectl("delete", "pod", "-n", namespace, victim, "--wait=true", timeout=180)
        node.measured["drain: pod deleted in"] = time.monotonic() - deleted
        time.sleep(2)
    node.measured["drain: statuses"] = dict(load.statuses)
    assert load.failures == [], load.failures[:10]
    assert load.statuses[200] > 20


def test_traffic_split_between_two_revisions(node: Node) -> None:
    plane, namespace, name = node.plane, "split", "split"
    deploy(node, hello_service(name, namespace, {"autoscaling.knative.dev/min-scale": "1"}))
    second = hello_service(
        name,
        namespace,
        {"autoscaling.knative.dev/min-scale": "1", "release": "second"},
        traffic=[
            {"revisionName": f"{name}-00001", "percent": 50},
            {"latestRevision": True, "percent": 50},
        ],
    )
    host = deploy(node, second)
    traffic = plane.get("-n", namespace, "ksvc", name)["status"]["traffic"]
    assert sorted((t["revisionName"], t["percent"]) for t in traffic) == [
        (f"{name}-00001", 50), (f"{name}-00002", 50)
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: node.call(host, "/cgi-bin/revision"), range(200)))
    served = Counter(body.strip() if status == 200 else status for status, body, _ in answers)
    node.measured["split: served"] = dict(served)
    assert set(served) == {f"{name}-00001", f"{name}-00002"}, served
    for revision in (f"{name}-00001", f"{name}-00002"):
        assert 90 <= served[revision] <= 110, served
    print(f"\nreal node: {json.dumps(node.measured)}")


def test_down_leaves_nothing_behind(node: Node) -> None:
    state = node.state
    processes = [(name, pid, start_time(pid)) for name, pid in recorded(state)]
    assert {name for name, _, _ in processes} >= {"node-holder", "containerd", "kubelet",
                                                  "kube-proxy", "coredns", "traefik"}  # fmt: skip
    # By pid and start time: pids wrap at 32768 here, and in the 40 s of `down` the other
    # test worker's processes took one of a pod's (a CI run met it).
    pod_processes = {pid: start_time(pid) for pid in cgroup_pids(state)}
    commands = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in pod_processes}
    # Pods and containerd's runc shims alike: what a killed node would leave is found here.
    assert {"pause", "containerd-shim"} <= commands, commands
    namespace = holder_mount_namespace(state)
    assert namespace is not None
    netns, host_veth, _ = names(state)
    started = time.monotonic()
    down(state)
    node.is_down = True
    node.measured["down"] = time.monotonic() - started
    print(f"\nreal node: down in {node.measured['down']:.1f} s")
    after = Snapshot.take()
    before = node.before

    assert [p for _, p, began in processes if start_time(p) == began] == []
    assert [p for p, began in pod_processes.items() if began and start_time(p) == began] == []
    # A freed namespace's inode number is reused by the kernel: a container of another
    # session's node can carry it minutes later. Such a process sits in that node's cgroup root.
    assert {p for p in pids_in_mount_namespace(namespace) if not in_other_root(p, state)} == set()
    # Other sessions' tests mount and unmount too (podman): only what could be the node's.
    node_paths = (str(state), "userapi-node", " /proc/sys/", "/run/containerd", "/run/nri",
                  "/var/lib/kubelet", "/var/lib/cni", "/var/log/", "/run/netns/cni-")  # fmt: skip
    assert [
        m for m in after.mounts
        if m not in before.mounts and any(p in m for p in node_paths)
    ] == []  # fmt: skip
    assert netns not in after.netns
    assert host_veth not in after.links
    # Other sessions' tests come and go meanwhile (control planes, podman's netns-<uuid>):
    # only names the node could have made count. containerd names pod namespaces cni-<uuid>,
    # the bridge plugin makes cni0 and veth<hex>.
    assert {n for n in after.netns - before.netns if n.startswith("cni-")} == set()
    assert {n for n in after.links - before.links if n.startswith(("cni", "veth"))} == set()
    assert after.nft == before.nft
    assert after.iptables == before.iptables
    assert cgroup_dirs(state) == []
    root = cgroup_root(state).lstrip("/")
    for hierarchy, children in after.cgroups.items():
        new = children - before.cgroups.get(hierarchy, set())
        assert root not in children, hierarchy
        assert {c for c in new if c in ("kubepods", "k8s.io")} == set(), hierarchy
    assert after.paths == before.paths
    assert after.sysctls == before.sysctls
    assert not state.exists()
    assert os.path.exists(f"/run/netns/{netns}") is False
