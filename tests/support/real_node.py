"""The real node (harness/cluster/node.py) as the tests share it: one control plane with a real
node for the session (tests/cluster/conftest.py's `real_node`), the host state taken before it
started (what its teardown must restore), and calls through its ingress."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cluster import ControlPlane
from harness.cluster.cgroups import hierarchies
from harness.cluster.node import SYSCTL_STAND_INS

_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


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
        timeout: float = 60,
    ) -> tuple[int, str, float]:
        """A request through Traefik with `host`; (status, body, seconds). Only while the
        node's namespace exists: without it the ingress address routes off the machine."""
        assert not self.is_down, "the node is down"
        assert self.namespace_up(), "the node's namespace is gone"
        request = urllib.request.Request(
            self.plane.ingress + path,
            data=body,
            method=method,
            headers={**(headers or {}), "Host": host},
        )
        started = time.monotonic()
        try:
            with _http.open(request, timeout=timeout) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        return status, text, time.monotonic() - started


def pods(plane: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    return list(plane.get("-n", namespace, "pods")["items"])


def ready(resource: dict[str, Any]) -> bool:
    conditions = resource.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
