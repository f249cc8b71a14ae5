"""What a running control plane is, and where its parts come from (controlplane/build)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "controlplane" / "build"
DEFAULT_STATE = ROOT / ".dev" / "cluster"
SYSTEM_NAMESPACE = "knative-serving"
# The queue-proxy image Knative injects into every revision's pod. A *.local name: Knative never
# resolves those against a registry, and the podman tests build an image under this name.
QUEUE_IMAGE = "dev.local/knative-serving/queue:{version}"
API_PORT = 6443
WEBHOOK_PORT = 8443
NODE_NAME = "kwok-node"
INGRESS_PORT = 80  # Traefik's, on the real node (node.py)


class ClusterError(RuntimeError):
    """The control plane could not be built, started or reached."""


def build() -> Path:
    """Run controlplane/build (a no-op when nothing changed): the directory of bin/ and config/."""
    result = subprocess.run([str(BUILD)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"controlplane/build failed with exit status {result.returncode}")
    return Path(result.stdout.strip().splitlines()[-1])


def kubectl_binary() -> Path:
    """The kubectl built with the control plane (the same Kubernetes version), for tests that
    need kubectl but no cluster (`kubectl kustomize`)."""
    return build() / "bin" / "kubectl"


@dataclass(frozen=True)
class ControlPlane:
    """A running control plane: what a test needs to reach it."""

    state: Path
    components: Path  # controlplane/build's output: bin/ and config/
    address: str  # the API server's address, inside the namespace, reachable from the host
    netns: str
    knative_version: str
    real_node: bool = False  # kubelet, containerd & co (node.py) rather than kwok's fake node

    @property
    def ingress(self) -> str:
        """Traefik's public entry point: Knative URLs are reached here with their Host."""
        if not self.real_node:
            raise ClusterError("no ingress: this control plane has kwok's fake node")
        return f"http://{self.address}:{INGRESS_PORT}"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{API_PORT}"

    def binary(self, name: str) -> Path:
        return self.components / "bin" / name

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane."""
        command = [str(self.binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def get(self, *args: str) -> Any:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    @contextlib.contextmanager
    def port_forward(self, namespace: str, target: str, port: int) -> Iterator[int]:
        """`kubectl port-forward` of `target`'s `port` (through the API server and the kubelet)
        to a free loopback port, which it yields; stopped on exit."""
        from harness.processes import free_port

        local = free_port()
        command = [str(self.binary("kubectl")), "--kubeconfig", str(self.kubeconfig),
                   "port-forward", "-n", namespace, target, f"{local}:{port}"]  # fmt: skip
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as forward:
            try:
                assert forward.stdout is not None
                first = forward.stdout.readline()
                if "Forwarding from 127.0.0.1" not in first:
                    raise ClusterError(f"kubectl port-forward {target}: {first.strip()}")
                yield local
            finally:
                forward.terminate()
                forward.wait(10)
