"""A real Kubernetes control plane with Knative Serving, run as local processes.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (fake nodes, so pods become
Ready and Job pods complete) and Knative Serving's webhook and controller, all built from the Go
modules pinned in controlplane/ (`controlplane/build`), run inside a network namespace this module
creates. The namespace is needed, not just tidy: the API server must advertise, and the webhook's
EndpointSlice must carry, an address that is not loopback (Kubernetes rejects loopback endpoints),
and no test may use any address outside loopback or namespaces it created. A veth pair joins the
namespace to the host, so clients on the host (pytest, kubectl, helm) reach the API server at the
namespace's address; nothing else can. Inside the namespace every component has its own ports
(etcd 2379, the Knative controller's fixed :8080), so several control planes never collide.

With `up(node=True)` (and for `make cluster`) the node is a real one instead of kwok's
(node.py): kubelet, containerd with Debian's runc and CNI plugins, kube-proxy, CoreDNS and
Traefik (Knative's ingress) as processes in the same namespace, Knative's activator and
autoscaler as pods on it (node_images.py builds their images; no registry is involved).

Everything lives in one state directory: certificates, the admin kubeconfig, logs, etcd's data and
the pid of each process. `up()` is idempotent (a healthy control plane is reused), `down()` stops
exactly the processes it recorded (the node's first, in order) and deletes the namespace. Needs
root (network namespaces, mounts, cgroups).

With the real node, `make cluster` also imports the chart's images (chart_images.py: the
userapi image built from this tree, PgBouncer's, the local profile's Redis and PostgreSQL)
and writes the values naming them, for `helm install ... -f manifests/overlays/local/values.yaml
-f $VALUES`. `load` imports an image you built (`make image`) under a kind.local name.
`load --for-skaffold` is the step skaffold's local profile adds to its builds (`make image
LOAD=skaffold`): skaffold deploys what it built as REPO:<image id>, and kubelet must find
that name on the node; when the current kube context is not this cluster's, it does nothing
(kind and k3d get skaffold's own loading).

    python -m harness.cluster up [STATE_DIR] [--fake-node]  # INGRESS=, VALUES=, KUBECONFIG= last
    python -m harness.cluster load IMAGE [--as NAME | --for-skaffold] [--state STATE_DIR]
    python -m harness.cluster down [STATE_DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from harness import images as image_tool
from harness.cluster import chart_images, node_images
from harness.cluster.credentials import credentials, kubeconfig, kubelet_client
from harness.cluster.knative import (
    knative_manifests,
    start_data_plane,
    start_knative,
    webhook_admits,
)
from harness.cluster.kubernetes import start_kubernetes
from harness.cluster.network import names, network_down, network_up
from harness.cluster.node import NODE_NAME, import_image, node_down, start_node, start_services
from harness.cluster.plane import (
    DEFAULT_STATE,
    QUEUE_IMAGE,
    ClusterError,
    ControlPlane,
    build,
    kubectl_binary,
)
from harness.cluster.supervisor import stop

__all__ = [
    "DEFAULT_STATE",
    "QUEUE_IMAGE",
    "ClusterError",
    "ControlPlane",
    "build",
    "down",
    "knative_manifests",
    "kubectl_binary",
    "up",
    "webhook_admits",
]


def knative_version(components: Path) -> str:
    return components.name.split("-knative-")[1].split("-etcd-")[0]


def up(state: Path = DEFAULT_STATE, *, detached: bool = False, node: bool = False) -> ControlPlane:
    """Start (or find running) the control plane whose files live in `state`. Detached, its
    processes outlive the caller (`make cluster`); otherwise they go through harness.processes,
    which stops them when the caller exits, however it exits. With `node`, the cluster's node
    is a real one (node.py: kubelet, containerd, kube-proxy, CoreDNS, Traefik, Knative's
    activator and autoscaler as pods) instead of kwok's fake one."""
    state = state.resolve()
    components = build()
    for directory in ("logs", "pids"):
        (state / directory).mkdir(parents=True, exist_ok=True)
    if detached:
        (state / "detached").touch()
    netns, address = network_up(state)
    token = credentials(state, address)
    kubelet_client(state)
    kubeconfig(state, address, token)
    plane = ControlPlane(state, components, address, netns, knative_version(components), node)
    try:
        start_kubernetes(state, components, netns, address, fake_node=not node)
        start_knative(plane, with_fake_node=not node)
        if node:
            start_real_node(plane)
    except BaseException:
        # Nothing left running; the logs stay for a post-mortem.
        with contextlib.suppress(Exception):
            node_down(plane, state)
        stop(state)
        network_down(state)
        raise
    return plane


def start_real_node(plane: ControlPlane) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    archives = node_images.archives(plane)
    timings["images"] = time.monotonic() - started
    start_node(plane, node_images.PAUSE_IMAGE, timings)
    started = time.monotonic()
    for archive in archives:
        import_image(plane, archive)
    timings["image import"] = time.monotonic() - started
    start_services(plane, timings)
    started = time.monotonic()
    start_data_plane(plane, NODE_NAME)
    timings["activator and autoscaler"] = time.monotonic() - started
    (plane.state / "node" / "timings.json").write_text(json.dumps(timings, indent=1))


def running_plane(state: Path) -> ControlPlane | None:
    """The control plane `state` describes, for teardown (None when it never got that far)."""
    try:
        components = Path((state / "node" / "components").read_text().strip())
        address = json.loads((state / "network.json").read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None
    netns = names(state)[0]
    return ControlPlane(state, components, address, netns, knative_version(components), True)


def down(state: Path = DEFAULT_STATE) -> None:
    """Stop every process `state` started (the node's first, in order, while the API server
    still answers), delete its namespace and its files."""
    state = state.resolve()
    if (state / "pids").exists():
        if (state / "node").exists():
            node_down(running_plane(state), state)
        stop(state)
    network_down(state)
    if state.exists():
        subprocess.run(["rm", "-rf", str(state)], check=False)


def chart_values(plane: ControlPlane) -> Path:
    """Imports the chart's images into the node; the values file naming them."""
    path = plane.state / "values.yaml"
    header = "# The chart's images as `make cluster` imported them into its node.\n"
    path.write_text(header + yaml.safe_dump(chart_images.load_chart_images(plane)))
    return path


def is_current(plane: ControlPlane) -> bool:
    """Whether the current context of the caller's kubeconfig (KUBECONFIG's first file, else
    ~/.kube/config) names this cluster's API server."""
    path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    try:
        config = yaml.safe_load(Path(path or Path.home() / ".kube" / "config").read_text())
        (context,) = [c for c in config["contexts"] if c["name"] == config["current-context"]]
        cluster_name = context["context"]["cluster"]
        (cluster,) = [c for c in config["clusters"] if c["name"] == cluster_name]
        return bool(cluster["cluster"]["server"] == plane.server)
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return False


def skaffold_name(image: str) -> str:
    """REPO:<image id>: the tag skaffold gives a local build it does not push, and deploys
    (its TagWithImageID), so that every build has a name of its own."""
    engine = image_tool.engine_name()
    env = image_tool.podman_env() if engine == "podman" else None
    result = subprocess.run([engine, "image", "inspect", "--format", "{{.Id}}", image], env=env,
                            capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    if result.returncode != 0:
        raise ClusterError(f"{engine} image inspect {image}: {result.stderr.strip()}")
    image_id = result.stdout.strip().removeprefix("sha256:")
    return f"{image.rsplit(':', 1)[0] if ':' in image.rsplit('/', 1)[-1] else image}:{image_id}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.cluster", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "load"])
    parser.add_argument("target", nargs="?", help="up, down: the state directory; load: IMAGE")
    parser.add_argument(
        "--fake-node",
        action="store_true",
        help="kwok's fake node instead of the real one (no ingress, no pods run)",
    )
    parser.add_argument("--as", dest="name", help="load: its name on the node "
                        "(default kind.local/<its last path component>)")  # fmt: skip
    parser.add_argument("--for-skaffold", action="store_true", help="load: as REPO:<image id>, "
                        "the name skaffold deploys, when the current kube context is this "
                        "cluster's; else nothing")  # fmt: skip
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="load: the cluster's")
    args = parser.parse_args(argv)
    state = Path(args.target) if args.target and args.action != "load" else DEFAULT_STATE
    try:
        if args.action == "down":
            down(state)
            print(f"control plane in {state} stopped")
            return 0
        if args.action == "load":
            plane = running_plane(args.state.resolve())
            if args.for_skaffold and (plane is None or not is_current(plane)):
                print(f"{args.target}: the current kube context is not the cluster in "
                      f"{args.state}; not loaded")  # fmt: skip
                return 0
            if plane is None or not args.target:
                raise ClusterError(f"load IMAGE needs a cluster with a real node in {args.state}")
            name = skaffold_name(args.target) if args.for_skaffold else args.name
            print(f"{args.target} loaded as {chart_images.load(plane, args.target, name)}")
            return 0
        plane = up(state, detached=True, node=not args.fake_node)
        values = chart_values(plane) if plane.real_node else None
    except ClusterError as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    print(f"API server {plane.server}, Knative Serving {plane.knative_version}, logs in "
          f"{plane.state / 'logs'}")  # fmt: skip
    if plane.real_node:
        print(f"INGRESS={plane.ingress}")
        print(f"VALUES={values}")
    print(f"KUBECONFIG={plane.kubeconfig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
