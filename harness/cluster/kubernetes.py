"""etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok's fake node."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness.cluster.plane import (
    API_PORT,
    ClusterError,
)
from harness.cluster.supervisor import alive, spawn


def api_ready(state: Path, address: str) -> bool:
    token = (state / "pki" / "tokens.csv").read_text().split(",", 1)[0]
    context = ssl.create_default_context(cafile=str(state / "pki" / "ca.crt"))
    request = urllib.request.Request(
        f"https://{address}:{API_PORT}/readyz", headers={"Authorization": f"Bearer {token}"}
    )
    # No proxy: an http(s)_proxy in the environment must never see the namespace's address.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(request, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait(what: str, ready: Any, timeout: float, state: Path, log: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not alive(state, log):
            raise ClusterError(f"{what} exited: see {state / 'logs' / (log + '.log')}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} not ready after {timeout:.0f}s: see {state / 'logs'}")
        time.sleep(0.5)


def start_kubernetes(
    state: Path, components: Path, netns: str, address: str, *, fake_node: bool = True
) -> None:
    """etcd, the API server, the controller manager and the scheduler; kwok too when the
    cluster's node is kwok's fake one rather than the real node (node.py)."""
    bin_dir, pki, kubeconfig = components / "bin", state / "pki", str(state / "kubeconfig")
    if not alive(state, "etcd"):
        spawn(state, netns, "etcd", [
            str(bin_dir / "etcd"), "--name", "default", "--data-dir", str(state / "etcd"),
            "--listen-client-urls", "http://127.0.0.1:2379",
            "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", "default=http://127.0.0.1:2380",
            "--listen-metrics-urls", "http://127.0.0.1:2381",
            # A throwaway test store on shared disks: durability is not worth seconds per write.
            "--unsafe-no-fsync", "--log-level", "warn",
        ], {})  # fmt: skip
    if not alive(state, "kube-apiserver"):
        spawn(state, netns, "kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            "--etcd-servers", "http://127.0.0.1:2379",
            "--bind-address", "0.0.0.0", "--secure-port", str(API_PORT),
            "--advertise-address", address,
            "--tls-cert-file", str(pki / f"apiserver-{address}.crt"),
            "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--token-auth-file", str(pki / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-cluster-ip-range", "10.96.0.0/16",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--allow-privileged=true",
            # Admission and conversion webhooks reach their Service through its EndpointSlice
            # (an address in this namespace) instead of a ClusterIP, which nothing here routes.
            "--enable-aggregator-routing=true",
            # The real node's kubelet (node.py): reached at its InternalIP (its name resolves
            # nowhere here), with a client certificate it trusts.
            "--kubelet-preferred-address-types", "InternalIP",
            "--kubelet-client-certificate", str(pki / "kubelet-client.crt"),
            "--kubelet-client-key", str(pki / "kubelet-client.key"),
        ], {})  # fmt: skip
    wait("kube-apiserver", lambda: api_ready(state, address), 180, state, "kube-apiserver")
    if not alive(state, "kube-controller-manager"):
        spawn(state, netns, "kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"), "--kubeconfig", kubeconfig,
            "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
            "--bind-address", "127.0.0.1", "--leader-elect=false",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--use-service-account-credentials=false",
        ], {})  # fmt: skip
    if not alive(state, "kube-scheduler"):
        spawn(state, netns, "kube-scheduler", [
            str(bin_dir / "kube-scheduler"), "--kubeconfig", kubeconfig,
            "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
            "--bind-address", "127.0.0.1", "--leader-elect=false",
        ], {})  # fmt: skip
    if fake_node and not alive(state, "kwok"):
        spawn(state, netns, "kwok", [
            str(bin_dir / "kwok"), "--kubeconfig", kubeconfig,
            "--config", str(components / "config" / "kwok" / "stages.yaml"),
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake",
            "--node-ip", address, "--cidr", "10.244.0.0/16",
            "--server-address", "127.0.0.1:10247",
        ], {})  # fmt: skip
