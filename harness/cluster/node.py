"""The test cluster's real node: containerd, kubelet and kube-proxy, with CoreDNS and Traefik,
in the control plane's network namespace (/work/shared/reference/dataplane.md, Part 2).

One holder process owns a private mount namespace inside that network namespace; every node
process joins it (`nsenter -t HOLDER -m -n`), so every mount they make (kubelet's volumes,
containerd's overlays, runc's) stays in it and goes with it. In it:
- the six /proc/sys files kubelet checks are stand-in files holding the values it wants
  (protectKernelDefaults: it refuses to start rather than write, and a write would land in the
  stand-in, never in the machine's kernel.panic & co);
- tmpfs over /run, /var/lib and /var/log: the paths containerd, kubelet and CNI use whatever
  their configuration says (/run/containerd/s, /run/nri, /var/lib/kubelet/device-plugins,
  /var/lib/cni, /var/log/containers) exist only there, and nothing is created on the host;
- the CNI bridge cni0 and the route of the Service range through it (Traefik, in this
  namespace, forwards to ClusterIPs, which kube-proxy's nftables rules translate).
Pod cgroups live under /<root>/kubepods in every cgroup hierarchy, <root> made here and removed
at teardown (kubelet's cgroupRoot). No process here ever sends a packet outside the namespace:
it has no default route, CoreDNS answers NXDOMAIN for every name outside cluster.local, and
Traefik's version check and usage report are off.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from harness.cluster import cgroups, gateway_api
from harness.cluster.knative import apply
from harness.cluster.network import names
from harness.cluster.plane import INGRESS_PORT, ClusterError, ControlPlane
from harness.cluster.supervisor import alive, pid_of, recorded, spawn, stop

NODE_NAME = "userapi-node"
POD_SUBNET, POD_GATEWAY, CLUSTER_CIDR = "10.88.0.0/24", "10.88.0.1", "10.88.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
PRIVATE_INGRESS_PORT, TRAEFIK_PING = 8081, "127.0.0.1:9000"
# Traefik is also the cluster's Gateway API implementation (its kubernetesGateway provider): the
# Gateway GATEWAY_NAMESPACE/GATEWAY_NAME of class GATEWAY_CLASS listens on GATEWAY_PORT. Knative's
# ingress has the Services a cloud's has (Kourier's kourier and kourier-internal): INGRESS_SERVICES
# in knative-serving, whose endpoints are Traefik's own entry points, for HTTPRoutes to send to.
GATEWAY_PORT, GATEWAY_CLASS = 8082, "traefik"
GATEWAY_NAMESPACE, GATEWAY_NAME = "default", "userapi-node"
INGRESS_SERVICES = {"traefik": INGRESS_PORT, "traefik-private": PRIVATE_INGRESS_PORT}
CRI_NAMESPACE = "k8s.io"
# What kubelet wants these global sysctls to be (pkg/kubelet/cm/container_manager_linux.go,
# setupKernelTunables); the stand-ins hold exactly these, so its check passes with no write.
SYSCTL_STAND_INS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}
# The node's processes in the order they start; teardown stops them in reverse.
PROCESSES = ("node-holder", "containerd", "kubelet", "kube-proxy", "coredns", "traefik")
# Paths a private tmpfs covers in the holder's mount namespace: the state directory may not
# live under them (it would be hidden from the node's processes).
HIDDEN = (Path("/run"), Path("/var/lib"), Path("/var/log"))


def node_dir(state: Path) -> Path:
    return state / "node"


def cgroup_root(state: Path) -> str:
    """kubelet's cgroupRoot (cgroups.py): named like the network namespace."""
    return "/" + names(state)[0]


def cgroup_dirs(state: Path) -> list[Path]:
    return cgroups.directories(names(state)[0])


def cgroup_pids(state: Path) -> set[int]:
    return cgroups.pids(names(state)[0])


def holder_script(state: Path) -> str:
    node = node_dir(state)
    binds = "\n".join(
        f'mount --bind "{node / "sysctl" / key.replace("/", ".")}" "/proc/sys/{key}"'
        for key in SYSCTL_STAND_INS
    )
    return f"""set -eu
{binds}
mount -t tmpfs -o mode=0755 userapi-node /run
mkdir -p /run/containerd /run/nri /run/netns /run/lock
chmod 0711 /run/containerd
mount -t tmpfs -o mode=0755 userapi-node /var/lib
mkdir -p /var/lib/kubelet /var/lib/cni
mount -t tmpfs -o mode=0755 userapi-node /var/log
mkdir -p /var/log/containers /var/log/pods
ip link add cni0 type bridge
ip addr add {POD_GATEWAY}/24 dev cni0
ip link set cni0 up
ip route add {SERVICE_CIDR} dev cni0
touch "{node / "holder.ready"}"
exec sleep infinity
"""


def containerd_config(state: Path, sandbox_image: str) -> str:
    node = node_dir(state)
    shims = f"{cgroup_root(state)}/{cgroups.SHIMS}"
    return f"""version = 3
root = '{node / "containerd" / "root"}'
state = '{node / "containerd" / "state"}'
[grpc]
  address = '{socket(state)}'
[ttrpc]
  address = '{socket(state)}.ttrpc'
[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '{node / "containerd" / "opt"}'
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{sandbox_image}'
  [plugins.'io.containerd.cri.v1.runtime']
    # No CAP_SYS_RESOURCE here: runc could not lower a pod's oom_score_adj below its own.
    restrict_oom_score_adj = true
    enable_selinux = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '{node / "cni" / "net.d"}'
      max_conf_num = 1
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = '/usr/sbin/runc'
          Root = '{node / "runc"}'
          # Under the node's cgroup root: found and stopped even if containerd was killed.
          ShimCgroup = '{shims}'
"""


def cni_config(state: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "userapi-node",
        "plugins": [
            {
                "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local", "dataDir": str(node_dir(state) / "cni" / "data"),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }  # fmt: skip


def kubelet_config(state: Path, address: str) -> dict[str, Any]:
    node = node_dir(state)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,  # these machines are cgroup v1 (hybrid)
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root(state),
        "containerRuntimeEndpoint": f"unix://{socket(state)}",
        "address": address,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        # The API server's kubelet client certificate (credentials.kubelet_client), nobody else.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(state / "pki" / "ca.crt")},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "resolvConf": str(node / "resolv.conf"),
        "clusterDomain": "cluster.local",
        "clusterDNS": [address],
        "podLogsDir": str(node / "pod-logs"),
        "volumePluginDir": str(node / "volume-plugins"),
        "protectKernelDefaults": True,
        "failSwapOn": True,
        "makeIPTablesUtilChains": False,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%",
                         "imagefs.available": "2%", "nodefs.inodesFree": "2%"},
        "imageGCHighThresholdPercent": 100,
        "serializeImagePulls": False,
    }  # fmt: skip


def kube_proxy_config(state: Path, address: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "nftables",
        "clientConnection": {"kubeconfig": str(state / "kubeconfig")},
        "hostnameOverride": NODE_NAME,
        "bindAddress": address,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": CLUSTER_CIDR,
        "detectLocalMode": "ClusterCIDR",
        "nodePortAddresses": [f"{address}/32"],
        # Zeroes: kube-proxy leaves nf_conntrack_max and the hash size (machine-wide) alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s", "udpTimeout": "0s", "udpStreamTimeout": "0s"},
    }  # fmt: skip


def corefile(state: Path, address: str) -> str:
    return f"""cluster.local:53 {{
    bind {address}
    errors
    kubernetes cluster.local {{
        kubeconfig {state / "kubeconfig"}
        pods insecure
        ttl 5
    }}
}}
.:53 {{
    bind {address}
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


def traefik_config(address: str) -> dict[str, Any]:
    return {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "experimental": {"knative": True},
        "entryPoints": {
            "web": {"address": f"{address}:{INGRESS_PORT}"},
            "private": {"address": f"{address}:{PRIVATE_INGRESS_PORT}"},
            "gateway": {"address": f"{address}:{GATEWAY_PORT}"},
            "traefik": {"address": TRAEFIK_PING},  # never the controller's :8080
        },
        "providers": {
            # Traefik waits this long after a change before applying it (default 2 s), and it
            # calls a KIngress ready once configured, without probing: keep the gap short.
            "providersThrottleDuration": "100ms",
            "knative": {
                "publicEntrypoints": ["web"],
                "privateEntrypoints": ["private"],
                "publicService": {"name": "traefik", "namespace": "knative-serving"},
                "privateService": {"name": "traefik-private", "namespace": "knative-serving"},
            },
            # Gateway API (the listener's port picks the entry point): Gateways of the class
            # GATEWAY_CLASS names, and their HTTPRoutes.
            "kubernetesGateway": {"statusAddress": {"ip": address}, "throttleDuration": "100ms"},
        },
        "ping": {"entryPoint": "traefik"},
        # The API (read-only, on the `traefik` entry point: the namespace's loopback) shows the
        # configuration Traefik is serving. A KIngress turns Ready up to a throttle before that
        # configuration is live, so a changed split is checked here (served_weights).
        "api": {"insecure": True, "dashboard": False},
        "log": {"level": "INFO"},
    }  # fmt: skip


def socket(state: Path) -> Path:
    return node_dir(state) / "containerd" / "containerd.sock"


def write_configs(plane: ControlPlane, sandbox_image: str) -> None:
    state, node, address = plane.state, node_dir(plane.state), plane.address
    for state_path in (state, node):
        if any(state_path.resolve().is_relative_to(hidden) for hidden in HIDDEN):
            raise ClusterError(f"the node's state cannot live under {', '.join(map(str, HIDDEN))}")
    for sub in ("sysctl", "cni/net.d", "cni/data", "containerd", "kubelet", "kubelet-certs",
                "pod-logs", "volume-plugins", "runc"):  # fmt: skip
        (node / sub).mkdir(parents=True, exist_ok=True)
    for key, value in SYSCTL_STAND_INS.items():
        (node / "sysctl" / key.replace("/", ".")).write_text(value + "\n")
    (node / "components").write_text(f"{plane.components}\n")
    (node / "holder.sh").write_text(holder_script(state))
    (node / "containerd" / "config.toml").write_text(containerd_config(state, sandbox_image))
    (node / "cni" / "net.d" / "10-userapi-node.conflist").write_text(
        json.dumps(cni_config(state), indent=2)
    )
    (node / "resolv.conf").write_text(f"nameserver {address}\n")
    (node / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(state, address)))
    (node / "kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config(state, address)))
    (node / "Corefile").write_text(corefile(state, address))
    (node / "traefik.yaml").write_text(yaml.safe_dump(traefik_config(address)))


def environment(plane: ControlPlane) -> dict[str, str]:
    """PATH: the built binaries (containerd finds its shim there), then the system's (runc,
    nft, the CNI plugins are Debian's)."""
    return {"PATH": f"{plane.components / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                    "/usr/bin:/sbin:/bin"}  # fmt: skip


def in_holder(state: Path) -> list[str]:
    pid = pid_of(state, "node-holder")
    if pid is None:
        raise ClusterError("the node's holder process is not running")
    return ["nsenter", "-t", str(pid), "-m", "-n"]


def wait_for(what: str, ready: Any, timeout: float, state: Path, process: str) -> float:
    """Seconds until `ready()`; raises if `process` exits or the time runs out."""
    started = time.monotonic()
    while not ready():
        if not alive(state, process):
            raise ClusterError(f"{what}: {process} exited, see {state / 'logs' / process}.log")
        if time.monotonic() - started > timeout:
            raise ClusterError(f"{what} not ready after {timeout:.0f}s: see {state / 'logs'}")
        time.sleep(0.2)
    return time.monotonic() - started


def ctr(plane: ControlPlane, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The built ctr against the node's containerd, in the CRI's namespace (its socket is in
    the state directory, so ctr runs on the host side)."""
    command = [str(plane.binary("ctr")), "--address", str(socket(plane.state)),
               "-n", CRI_NAMESPACE, *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise ClusterError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
    return result


def node_ready(plane: ControlPlane) -> bool:
    result = plane.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
    if result.returncode != 0:
        return False
    conditions = json.loads(result.stdout)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def start_node(plane: ControlPlane, sandbox_image: str, timings: dict[str, float]) -> None:
    """Start the holder, containerd, kubelet and kube-proxy (each once: a running one is kept),
    and wait for the node to be Ready. `timings` gets the seconds each step took."""
    state, netns = plane.state, plane.netns
    env = environment(plane)
    write_configs(plane, sandbox_image)
    node = node_dir(state)
    if not alive(state, "node-holder"):
        (node / "holder.ready").unlink(missing_ok=True)
        cgroups.make_root(names(state)[0])
        spawn(state, netns, "node-holder",
              ["unshare", "--mount", "--propagation", "private", "sh", str(node / "holder.sh")],
              env, enter=["nsenter", f"--net=/run/netns/{netns}"])  # fmt: skip
        wait_for("the node's holder", (node / "holder.ready").exists, 30, state, "node-holder")
    enter = in_holder(state)
    if not alive(state, "containerd"):
        spawn(state, netns, "containerd", ["containerd", "--config",
              str(node / "containerd" / "config.toml")], env, enter=enter)  # fmt: skip
        timings["containerd"] = wait_for(
            "containerd", lambda: containerd_answers(plane), 60, state, "containerd"
        )
    if not alive(state, "kubelet"):
        started = time.monotonic()
        spawn(state, netns, "kubelet", [
            str(plane.binary("kubelet")), "--config", str(node / "kubelet.yaml"),
            "--kubeconfig", str(state / "kubeconfig"), "--root-dir", str(node / "kubelet"),
            "--cert-dir", str(node / "kubelet-certs"), "--hostname-override", NODE_NAME,
            "--node-ip", plane.address, "--v=2",
        ], env, enter=enter)  # fmt: skip
        wait_for("the node", lambda: node_ready(plane), 120, state, "kubelet")
        timings["node Ready"] = time.monotonic() - started
    if not alive(state, "kube-proxy"):
        spawn(state, netns, "kube-proxy", [
            str(plane.binary("kube-proxy")), "--config", str(node / "kube-proxy.yaml"),
        ], env, enter=enter)  # fmt: skip


def gateway_objects(address: str) -> list[dict[str, Any]]:
    """Traefik's GatewayClass and the node's Gateway, and the Knative ingress's Services: no
    selector (Traefik is a process, not a pod), an EndpointSlice naming its entry point."""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS},
            "spec": {"controllerName": "traefik.io/gateway-controller"},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {
                        "name": "http",
                        "protocol": "HTTP",
                        "port": GATEWAY_PORT,
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        },
    ]
    for name, port in INGRESS_SERVICES.items():
        objects += [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "knative-serving"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-process",
                    "namespace": "knative-serving",
                    "labels": {
                        "kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by": "userapi-harness",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            },
        ]
    return objects  # fmt: skip


def install_gateway_crds(plane: ControlPlane) -> None:
    """Gateway API's CRDs (the version Traefik is built against: gateway_api.py), established:
    what a cloud's Gateway controller brings, and the cloud overlays' routes need."""
    crds = gateway_api.crds()
    apply(plane, crds)
    plane.kubectl("wait", "--for", "condition=Established", "--timeout", "60s",
                  *(f"crd/{crd['metadata']['name']}" for crd in crds), timeout=90)  # fmt: skip


def install_gateway_api(plane: ControlPlane) -> None:
    """The CRDs, established before Traefik starts watching them, then gateway_objects()."""
    install_gateway_crds(plane)
    apply(plane, gateway_objects(plane.address))


def start_services(plane: ControlPlane, timings: dict[str, float]) -> None:
    """CoreDNS (the cluster DNS kubelet names) and Traefik (Knative's ingress and the cluster's
    Gateway API implementation), as processes in the node's namespaces."""
    state, netns, node = plane.state, plane.netns, node_dir(plane.state)
    env = environment(plane)
    enter = in_holder(state)
    if not alive(state, "coredns"):
        spawn(state, netns, "coredns", [str(plane.binary("coredns")), "-conf",
              str(node / "Corefile")], env, enter=enter)  # fmt: skip
    if not alive(state, "traefik"):
        started = time.monotonic()
        install_gateway_api(plane)
        timings["Gateway API"] = time.monotonic() - started
        spawn(state, netns, "traefik", [str(plane.binary("traefik")),
              f"--configFile={node / 'traefik.yaml'}"],
              {**env, "KUBECONFIG": str(state / "kubeconfig")}, enter=enter)  # fmt: skip
        wait_for("Traefik", lambda: traefik_answers(plane), 60, state, "traefik")
        timings["Traefik"] = time.monotonic() - started


def containerd_answers(plane: ControlPlane) -> bool:
    if not socket(plane.state).exists():
        return False
    try:
        ctr(plane, "version", timeout=10)
    except (ClusterError, subprocess.TimeoutExpired):
        return False
    return True


def traefik_answers(plane: ControlPlane) -> bool:
    """Traefik's /ping, asked from inside the namespace (it listens on its loopback)."""
    result = subprocess.run(
        [*in_holder(plane.state), "curl", "-s", "--noproxy", "*", "-m", "2",
         f"http://{TRAEFIK_PING}/ping"],
        capture_output=True, text=True, check=False, timeout=10,
    )  # fmt: skip
    return result.stdout.strip() == "OK"


def served_weights(plane: ControlPlane, namespace: str, ingress: str) -> list[list[int]]:
    """The weights of each weighted round robin Traefik is serving for a KIngress (one per rule
    and path: the default host's, the cluster-local host's, each tag's), from its API."""
    result = subprocess.run(
        [*in_holder(plane.state), "curl", "-sf", "--noproxy", "*", "-m", "5",
         f"http://{TRAEFIK_PING}/api/http/services?per_page=10000"],
        capture_output=True, text=True, check=False, timeout=15,
    )  # fmt: skip
    if result.returncode != 0:
        raise ClusterError(f"Traefik's API did not answer: {result.returncode} {result.stderr}")
    prefix = f"{namespace}-{ingress}-rule-"
    return [
        sorted(split["weight"] for split in service["weighted"]["services"])
        for service in json.loads(result.stdout)
        if service.get("provider") == "knative"
        and service["name"].startswith(prefix)
        and "weighted" in service
    ]


def import_image(plane: ControlPlane, archive: Path) -> None:
    ctr(plane, "images", "import", "--all-platforms", str(archive), timeout=300)


def holder_mount_namespace(state: Path) -> str | None:
    pid = pid_of(state, "node-holder")
    if pid is None:
        return None
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/ns/mnt")
    return None


def pids_in_mount_namespace(namespace: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    found.add(int(entry.name))
    return found


def kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def delete_workloads(plane: ControlPlane, timeout: float = 30) -> None:
    """Ask the API server to remove every pod on the node (Knative Services first, so nothing
    recreates them), with a short grace: kubelet then stops each pod through the CRI, CNI
    included. Best effort: whatever is left is killed by cgroup afterwards."""
    for args in (("delete", "ksvc", "--all", "-A", "--wait=false"),
                 ("delete", "deployments", "--all", "-A", "--wait=false")):  # fmt: skip
        with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
            plane.kubectl(*args, "--timeout=20s", check=False, timeout=30)
    with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
        plane.kubectl("delete", "pods", "-A", "--field-selector", f"spec.nodeName={NODE_NAME}",
                      "--grace-period=1", "--wait=false", check=False, timeout=30)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = plane.kubectl(
            "get", "pods", "-A", "--field-selector", f"spec.nodeName={NODE_NAME}", "-o", "name",
            check=False, timeout=30,
        )  # fmt: skip
        if result.returncode != 0 or not result.stdout.strip():
            return
        time.sleep(0.5)


def node_down(plane: ControlPlane | None, state: Path) -> None:
    """Tear the node down (dataplane.md step 6): workloads, Traefik, CoreDNS, kube-proxy and its
    rules, kubelet, containerd, what is left in the pods' cgroups and the holder's mount
    namespace (the runc shims), the holder, the cgroup directories. Safe to repeat; the
    control plane is still up when this runs."""
    running = {name for name, _ in recorded(state)}
    if plane is not None and "kubelet" in running and "containerd" in running:
        delete_workloads(plane)
    stop(state, ["traefik", "coredns"])
    if "kube-proxy" in running and "node-holder" in running:
        stop(state, ["kube-proxy"])
        subprocess.run(
            [*in_holder(state), str(node_binary(state, "kube-proxy")), "--cleanup",
             "--config", str(node_dir(state) / "kube-proxy.yaml")],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
    stop(state, ["kube-proxy", "kubelet"], grace=10)
    stop(state, ["containerd"], grace=10)
    # What is left: pod processes and runc shims (both under the cgroup root), and anything
    # else still in the holder's mount namespace.
    left = cgroups.kill_all(names(state)[0])
    namespace = holder_mount_namespace(state)
    holder = pid_of(state, "node-holder")
    if namespace is not None:
        kill(pids_in_mount_namespace(namespace) - {holder or -1})
    stop(state, ["node-holder"])
    if left:
        raise ClusterError(f"processes {sorted(left)} outlived the node")
    cgroups.remove(names(state)[0])


def node_binary(state: Path, name: str) -> Path:
    """The binary a running node was started from (its state records the components)."""
    return Path((node_dir(state) / "components").read_text().strip()) / "bin" / name
