"""The real node (harness/cluster/node.py) as the tests share it: one control plane with a real
node for the session (tests/cluster/conftest.py's `real_node`), the host state taken before it
started (what its teardown must restore), calls through its ingress, Knative Services of the
hello image, waiting for Ready and for zero, and background load. Requests go only to the
node's namespace, and only while it exists: without it the ingress address routes off the
machine. And the chart's `api` values on the node (API_VALUES: its one host on the node's
Gateway).

The hello image (harness/cluster/node_images.py) is busybox's httpd; its CGI script
/cgi-bin/revision answers with the revision that served it, after sleeping `?SECONDS`.
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cluster import ControlPlane
from harness.cluster.cgroups import hierarchies
from harness.cluster.knative import configure
from harness.cluster.node import GATEWAY_NAME, GATEWAY_NAMESPACE, SYSCTL_STAND_INS
from harness.cluster.node_images import HELLO_IMAGE

BODY = "hello from the real node\n"
# busybox's httpd ignores SIGTERM as PID 1: a shell that exits on it instead.
HTTPD = "trap 'exit 0' TERM; /bin/busybox httpd -f -p 8080 -h /www & wait"
WINDOW = "6s"  # the shortest autoscaling window Knative accepts
GRACE = "6s"  # config-autoscaler's scale-to-zero-grace-period for these clusters
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
API_HOST = "api.example.com"
# The chart's one host on this node: the route attaches to the node's Gateway (Traefik's entry
# point on GATEWAY_PORT); its backend is Knative's cluster-local ingress, here Traefik's private
# entry point behind the Service traefik-private (harness/cluster/node.py).
API_VALUES: dict[str, Any] = {
    "host": API_HOST,
    "parentRefs": [{"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE}],
    "knativeIngress": {"name": "traefik-private", "namespace": "knative-serving", "port": 80,
                       "domain": "svc.cluster.local"},
}  # fmt: skip


def sysctl_values() -> dict[str, str]:
    keys = [*SYSCTL_STAND_INS, "net/netfilter/nf_conntrack_max"]
    values = {}
    for key in keys:
        path = Path("/proc/sys") / key
        values[key] = path.read_text().strip() if path.exists() else "-"
    return values


def run(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=False).stdout


@dataclass
class Snapshot:
    """The host state the node could leave something in."""

    netns: set[str]
    links: set[str]
    nft: str
    iptables: str
    mounts: list[str]
    cgroups: dict[str, set[str]]
    paths: dict[str, bool]
    sysctls: dict[str, str]

    @classmethod
    def take(cls) -> Snapshot:
        links = {
            line.split(":")[1].strip().split("@")[0]
            for line in run("ip", "-o", "link", "show").splitlines()
            if ":" in line
        }
        # Counters change with traffic; the rules are what counts.
        iptables = "\n".join(
            re.sub(r"\[\d+:\d+\]", "", line)
            for line in run("iptables-save").splitlines()
            if not line.startswith("#")
        )
        return cls(
            netns={line.split()[0] for line in run("ip", "netns", "list").splitlines() if line},
            links=links,
            nft=run("nft", "list", "ruleset"),
            iptables=iptables,
            mounts=Path("/proc/mounts").read_text().splitlines(),
            cgroups={str(h): {p.name for p in h.iterdir() if p.is_dir()} for h in hierarchies()},
            paths={
                p: Path(p).exists()
                for p in (
                    "/var/lib/cni",
                    "/run/containerd",
                    "/var/lib/kubelet",
                    "/run/nri",
                    "/var/log/containers",
                    "/opt/containerd",
                    "/etc/cni/net.d",
                )
            },
            sysctls=sysctl_values(),
        )


@dataclass
class Node:
    plane: ControlPlane
    state: Path
    before: Snapshot
    is_down: bool = False
    measured: dict[str, Any] = field(default_factory=dict)

    def namespace_up(self) -> bool:
        return Path("/run/netns", self.plane.netns).exists()

    def call(
        self,
        host: str,
        path: str = "/",
        *,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        port: int | None = None,
        timeout: float = 60,
    ) -> tuple[int, str, float]:
        """A request with `host` through Traefik's public entry point (or its `port` there);
        (status, body, seconds). A connection that fails or times out is status 0, with the
        error as its body: the callers count it."""
        assert not self.is_down, "the node is down"
        assert self.namespace_up(), "the node's namespace is gone"
        base = self.plane.ingress if port is None else f"http://{self.plane.address}:{port}"
        request = urllib.request.Request(
            base + path, data=body, method=method, headers={**(headers or {}), "Host": host}
        )
        started = time.monotonic()
        try:
            with _http.open(request, timeout=timeout) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        except (OSError, http.client.HTTPException) as error:
            status, text = 0, repr(error)
        return status, text, time.monotonic() - started


def short_scale_to_zero(plane: ControlPlane) -> None:
    """Scale to zero within seconds of the last request, so that tests need not wait long."""
    configure(plane, "config-autoscaler", {"scale-to-zero-grace-period": GRACE})


def ready(resource: dict[str, Any]) -> bool:
    conditions = resource.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pods(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    return list(plane.get("-n", namespace, "pods")["items"])


def serving_pods(plane: ControlPlane, namespace: str) -> int:
    """Ready pods not being deleted: the ones the ingress and the activator may send to."""
    return sum(
        1 for p in pods(plane, namespace)
        if ready(p) and not p["metadata"].get("deletionTimestamp")
    )  # fmt: skip


def hello_service(
    name: str, namespace: str, annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A Knative Service of the hello image; `spec` adds to the Service's spec (traffic)."""
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {"autoscaling.knative.dev/window": WINDOW, **(annotations or {})}
                },
                "spec": {
                    "timeoutSeconds": 30,
                    "containers": [{
                        "image": HELLO_IMAGE,
                        "args": ["sh", "-c", HTTPD],
                        "ports": [{"containerPort": 8080}],
                    }],
                },
            },
            **spec,
        },
    }  # fmt: skip


def deploy(node: Node, service: dict[str, Any], timeout: float = 180) -> str:
    """Applies `service` (its namespace made if new), waits for Ready; returns its URL's host."""
    plane, namespace = node.plane, service["metadata"]["namespace"]
    if plane.kubectl("get", "namespace", namespace, check=False).returncode != 0:
        plane.kubectl("create", "namespace", namespace)
    started = time.monotonic()
    plane.kubectl("apply", "-f", "-", input=json.dumps(service))
    name, generation = service["metadata"]["name"], None
    deadline = started + timeout
    while True:
        found = plane.get("-n", namespace, "ksvc", name)
        generation = found["metadata"]["generation"]
        fresh = found.get("status", {}).get("observedGeneration") == generation
        if fresh and ready(found):
            break
        assert time.monotonic() < deadline, json.dumps(found.get("status"), indent=1)
        time.sleep(0.5)
    host: str = found["status"]["url"].split("://", 1)[1]
    # Traefik calls a KIngress ready once it has the configuration, without probing it: the
    # route may answer 404 for a moment after the Service is Ready.
    while node.call(host, "/cgi-bin/revision")[0] == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    return host


def wait_for_zero(node: Node, namespace: str, timeout: float = 120) -> float:
    idle_from = time.monotonic()
    while pods(node.plane, namespace):
        assert time.monotonic() - idle_from < timeout, "never scaled to zero"
        time.sleep(0.5)
    return time.monotonic() - idle_from


class Load:
    """`clients` threads calling `path` on `host` (with `headers`) back to back, each pausing
    `pause` seconds between calls, until stopped; every answer's status is kept, and each 200's
    body."""

    def __init__(
        self, node: Node, host: str, path: str, clients: int, pause: float = 0,
        port: int | None = None, headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.node, self.host, self.path, self.pause, self.port = node, host, path, pause, port
        self.headers = headers
        self.statuses: Counter[int] = Counter()
        self.bodies: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body, _ = self.node.call(self.host, self.path, timeout=30, port=self.port,
                                             headers=self.headers)  # fmt: skip
            with self._lock:
                self.statuses[status] += 1
                if status == 200:
                    self.bodies[body.strip()] += 1
                else:
                    self.failures.append(f"{status}: {body[:200]}")
            self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
