"""The real node (harness/cluster/node.py): a Knative Service turns Ready on kubelet, containerd
and runc, answers through Traefik at its Knative URL's host, scales to zero and back through the
activator; then `down()` leaves the machine as it found it.

A control plane of its own (not the session's, which keeps kwok's fake node for the other
tests), shared with test_chart_on_node.py (conftest.py's `real_node`): its teardown is part of
what is tested, last. Requests go only to the ingress, in the namespace this control plane
made, and only while that namespace exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
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
from harness.cluster.node_images import HELLO_IMAGE
from harness.cluster.supervisor import recorded, start_time
from harness.processes import free_port
from tests.support.real_node import Node, Snapshot, pods, ready, sysctl_values

pytestmark = pytest.mark.cluster

NAMESPACE = "hello"
SERVICE = "hello"
BODY = "hello from the real node\n"
# busybox's httpd ignores SIGTERM as PID 1: a shell that exits on it instead.
HTTPD = "trap 'exit 0' TERM; /bin/busybox httpd -f -p 8080 -h /www & wait"
WINDOW = "6s"  # the shortest autoscaling window Knative accepts
GRACE = "6s"  # config-autoscaler's scale-to-zero-grace-period for this cluster
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


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
    plane.kubectl("patch", "configmap", "config-autoscaler", "-n", "knative-serving",
                  "--type", "merge", "-p",
                  json.dumps({"data": {"scale-to-zero-grace-period": GRACE}}))  # fmt: skip
    plane.kubectl("create", "namespace", NAMESPACE)
    service = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/window": WINDOW}},
            "spec": {
                "timeoutSeconds": 10,
                "containers": [{
                    "image": HELLO_IMAGE,
                    "args": ["sh", "-c", HTTPD],
                    "ports": [{"containerPort": 8080}],
                }],
            },
        }},
    }  # fmt: skip
    started = time.monotonic()
    plane.kubectl("apply", "-f", "-", input=json.dumps(service))
    deadline = started + 180
    while not ready(found := plane.get("-n", NAMESPACE, "ksvc", SERVICE)):
        assert time.monotonic() < deadline, json.dumps(found.get("status"), indent=1)
        time.sleep(0.5)
    node.measured["ksvc Ready"] = time.monotonic() - started
    url = found["status"]["url"]
    host = url.split("://", 1)[1]
    assert host == f"{SERVICE}.{NAMESPACE}.example.com"
    (pod,) = pods(plane, NAMESPACE)
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert {c["name"] for c in pod["spec"]["containers"]} == {"user-container", "queue-proxy"}

    # Traefik calls a KIngress ready once it has the configuration, without probing it: the
    # route may answer 404 for a moment after the Service is Ready.
    ready_at = time.monotonic()
    while (answer := node.call(host))[0] == 404 and time.monotonic() - ready_at < 10:
        time.sleep(0.1)
    node.measured["first 200 after Ready"] = time.monotonic() - ready_at
    assert answer[:2] == (200, BODY)
    status, body, seconds = node.call(host)
    assert (status, body) == (200, BODY)
    node.measured["warm request"] = seconds
    # kubectl exec streams through the API server to the kubelet, as logs does.
    exec_in_app = ("exec", "-n", NAMESPACE, pod["metadata"]["name"], "-c", "user-container")
    served = plane.kubectl(*exec_in_app, "--", "/bin/busybox", "cat", "/www/index.html")
    assert served.stdout == BODY
    # kubectl port-forward: a loopback port on this host to the pod's, through the kubelet.
    port = free_port()
    target = f"pod/{pod['metadata']['name']}"
    command = [str(plane.binary("kubectl")), "--kubeconfig", str(plane.kubeconfig),
               "port-forward", "-n", NAMESPACE, target, f"{port}:8080"]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as forward:
        try:
            assert forward.stdout is not None
            assert "Forwarding from 127.0.0.1" in forward.stdout.readline()
            with _http.open(f"http://127.0.0.1:{port}/", timeout=10) as response:
                assert response.read().decode() == BODY
        finally:
            forward.terminate()
    # An unknown host is Traefik's 404, not the Service.
    assert node.call("nobody.example.com")[0] == 404

    # No traffic: the autoscaler takes the revision to zero pods.
    idle_from = time.monotonic()
    deadline = idle_from + 120
    while pods(plane, NAMESPACE):
        assert time.monotonic() < deadline, "never scaled to zero"
        time.sleep(0.5)
    node.measured["scaled to zero after idle"] = time.monotonic() - idle_from

    # At zero: the activator holds the request while a pod starts, then it is answered.
    status, body, seconds = node.call(host)
    assert (status, body) == (200, BODY)
    node.measured["scale from zero"] = seconds
    assert len(pods(plane, NAMESPACE)) == 1
    print(f"\nreal node: {json.dumps(node.measured)}")


def test_down_leaves_nothing_behind(node: Node) -> None:
    state = node.state
    processes = list(recorded(state))
    assert {name for name, _ in processes} >= {"node-holder", "containerd", "kubelet",
                                               "kube-proxy", "coredns", "traefik"}  # fmt: skip
    pod_processes = cgroup_pids(state)
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

    assert [p for _, p in processes if start_time(p) is not None] == []
    assert [p for p in pod_processes if start_time(p) is not None] == []
    assert pids_in_mount_namespace(namespace) == set()
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
