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

Everything lives in one state directory: certificates, the admin kubeconfig, logs, etcd's data and
the pid of each process. `up()` is idempotent (a healthy control plane is reused), `down()` stops
exactly the processes it recorded and deletes the namespace. Needs root (network namespaces).

    python -m harness.cluster up [STATE_DIR]     # prints KUBECONFIG=/abs/path last
    python -m harness.cluster down [STATE_DIR]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import processes

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "controlplane" / "build"
DEFAULT_STATE = ROOT / ".dev" / "cluster"
SYSTEM_NAMESPACE = "knative-serving"
# The queue-proxy image Knative injects into every revision's pod. A *.local name: Knative never
# resolves those against a registry, and the podman tests build an image under this name.
QUEUE_IMAGE = "dev.local/knative-serving/queue:{version}"
# Private addresses for the namespaces' veth pairs: 10.254.N.0/30, one N per control plane.
SUBNET_PREFIX = "10.254."
API_PORT = 6443
WEBHOOK_PORT = 8443
NODE_NAME = "kwok-node"
_ALLOCATION_LOCK = Path("/run/lock/userapi-cluster-net.lock")
_NETNS_DIR = Path("/run/netns")  # where `ip netns add` puts each namespace's handle
_ABANDONED_AFTER_SECONDS = 120


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


# Processes ------------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited; a parent that is not waiting (say, init) has not reaped it
        return None
    return fields[19]  # field 22: start time in clock ticks since boot


def _recorded(state: Path) -> Iterator[tuple[str, int]]:
    """(name, pid) of every process this state directory started that is still that process."""
    for record in sorted((state / "pids").glob("*")):
        pid, started = record.read_text().split()
        if _start_time(int(pid)) == started:
            yield record.name, int(pid)


def _spawn(state: Path, netns: str, name: str, command: Sequence[str], env: dict[str, str]) -> None:
    args = ["ip", "netns", "exec", netns, *command]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    log_path = state / "logs" / f"{name}.log"
    if (state / "detached").exists():  # `make cluster`: outlives this process
        with log_path.open("ab") as log:
            pid = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, cwd=state,
            ).pid  # fmt: skip
    else:  # the tests: the registry stops it at exit, its watchdog even if pytest is killed
        pid = processes.spawn(args, log_path, env=env, cwd=state).pid
    (state / "pids" / name).write_text(f"{pid} {_start_time(pid)}\n")


def _alive(state: Path, name: str) -> bool:
    return any(n == name for n, _ in _recorded(state))


def _stop(state: Path) -> None:
    running = list(_recorded(state))
    # SIGTERM to all at once, then SIGKILL whatever is left after 5 s: the data is throwaway, and
    # the API server would otherwise wait out its open watches.
    for _, pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while any(_start_time(pid) is not None for _, pid in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    for _, pid in running:
        if _start_time(pid) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    for record in (state / "pids").glob("*"):
        record.unlink()


# Network namespace ----------------------------------------------------------------------------


def _names(state: Path) -> tuple[str, str, str]:
    tag = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:8]
    return f"userapi-{tag}", f"ua{tag}h", f"ua{tag}n"  # netns, host veth, namespace veth (<= 15)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _network_up(state: Path) -> tuple[str, str]:
    """Create (or find) this state directory's namespace; (netns name, its address)."""
    netns, host_veth, ns_veth = _names(state)
    saved = state / "network.json"
    if saved.exists() and _ip("netns", "exec", netns, "true", check=False).returncode == 0:
        return netns, str(json.loads(saved.read_text())["address"])
    if os.geteuid() != 0:
        raise ClusterError("the control plane runs in a network namespace: run as root")
    _network_down(state)
    _ALLOCATION_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with _ALLOCATION_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two control planes starting at once get two subnets
        _sweep_abandoned()
        used = _ip("-4", "-o", "addr", "show").stdout
        free = next(
            (n for n in range(256) if f" {SUBNET_PREFIX}{n}." not in used),
            None,
        )
        if free is None:
            raise ClusterError(f"no free {SUBNET_PREFIX}N.0/30 subnet for the namespace")
        host, inside = f"{SUBNET_PREFIX}{free}.1", f"{SUBNET_PREFIX}{free}.2"
        _ip("netns", "add", netns)
        _ip("link", "add", host_veth, "type", "veth", "peer", "name", ns_veth)
        _ip("link", "set", ns_veth, "netns", netns)
        _ip("addr", "add", f"{host}/30", "dev", host_veth)
        _ip("link", "set", host_veth, "up")
        for command in (
            ("link", "set", "lo", "up"),
            ("addr", "add", f"{inside}/30", "dev", ns_veth),
            ("link", "set", ns_veth, "up"),
        ):
            _ip("netns", "exec", netns, "ip", *command)
    saved.write_text(json.dumps({"netns": netns, "address": inside, "host": host}))
    return netns, inside


def _sweep_abandoned(older_than: float = _ABANDONED_AFTER_SECONDS) -> None:
    """Deletes the namespaces (and veth pairs) of control planes whose owner was killed before
    it could clean up (a SIGKILLed pytest): ours by name, with no process left in them, and
    older than any start still spawning its first process into one."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        netns = line.split()[0] if line.split() else ""
        if not netns.startswith("userapi-"):
            continue
        try:
            age = time.time() - (_NETNS_DIR / netns).stat().st_mtime
        except OSError:
            continue
        busy = _ip("netns", "pids", netns, check=False).stdout.strip()
        if age < older_than or busy:
            continue
        tag = netns.removeprefix("userapi-")
        _ip("link", "del", f"ua{tag}h", check=False)
        _ip("netns", "del", netns, check=False)


def _network_down(state: Path) -> None:
    netns, host_veth, _ = _names(state)
    _ip("link", "del", host_veth, check=False)  # deletes its peer in the namespace too
    _ip("netns", "del", netns, check=False)
    (state / "network.json").unlink(missing_ok=True)


# Credentials ----------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"openssl {args[0]}: {result.stderr.strip()}")


def _credentials(state: Path, address: str) -> str:
    """A CA, the API server's certificate for `address`, the service-account key pair and an
    admin token (system:masters through --token-auth-file); returns the token."""
    pki = state / "pki"
    token_file = pki / "tokens.csv"
    if token_file.exists() and (pki / f"apiserver-{address}.crt").exists():
        return token_file.read_text().split(",", 1)[0]
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    ca_key, ca_crt = pki / "ca.key", pki / "ca.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
             "/CN=userapi-test-ca", "-keyout", str(ca_key), "-out", str(ca_crt))  # fmt: skip
    key, csr, crt = pki / "apiserver.key", pki / "apiserver.csr", pki / f"apiserver-{address}.crt"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local", "localhost"]  # fmt: skip
    san = ",".join([f"DNS:{n}" for n in names] + [f"IP:{address}", "IP:127.0.0.1", "IP:10.96.0.1"])
    extensions = pki / "apiserver.ext"
    extensions.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "30", "-extfile", str(extensions),
             "-out", str(crt))  # fmt: skip
    _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    token = secrets.token_hex(24)
    token_file.write_text(f'{token},admin,admin,"system:masters"\n')
    return token


def _kubeconfig(state: Path, address: str, token: str) -> Path:
    ca = base64.b64encode((state / "pki" / "ca.crt").read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "userapi",
        "clusters": [{"name": "userapi", "cluster": {
            "server": f"https://{address}:{API_PORT}", "certificate-authority-data": ca}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "userapi", "context": {"cluster": "userapi", "user": "admin"}}],
    }  # fmt: skip
    path = state / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    os.chmod(path, 0o600)
    return path


# Starting the components ----------------------------------------------------------------------


def _api_ready(state: Path, address: str) -> bool:
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


def _wait(what: str, ready: Any, timeout: float, state: Path, log: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not _alive(state, log):
            raise ClusterError(f"{what} exited: see {state / 'logs' / (log + '.log')}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{what} not ready after {timeout:.0f}s: see {state / 'logs'}")
        time.sleep(0.5)


def _start_kubernetes(state: Path, components: Path, netns: str, address: str) -> None:
    bin_dir, pki, kubeconfig = components / "bin", state / "pki", str(state / "kubeconfig")
    if not _alive(state, "etcd"):
        _spawn(state, netns, "etcd", [
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
    if not _alive(state, "kube-apiserver"):
        _spawn(state, netns, "kube-apiserver", [
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
        ], {})  # fmt: skip
    _wait("kube-apiserver", lambda: _api_ready(state, address), 180, state, "kube-apiserver")
    if not _alive(state, "kube-controller-manager"):
        _spawn(state, netns, "kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"), "--kubeconfig", kubeconfig,
            "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
            "--bind-address", "127.0.0.1", "--leader-elect=false",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--use-service-account-credentials=false",
        ], {})  # fmt: skip
    if not _alive(state, "kube-scheduler"):
        _spawn(state, netns, "kube-scheduler", [
            str(bin_dir / "kube-scheduler"), "--kubeconfig", kubeconfig,
            "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
            "--bind-address", "127.0.0.1", "--leader-elect=false",
        ], {})  # fmt: skip
    if not _alive(state, "kwok"):
        _spawn(state, netns, "kwok", [
            str(bin_dir / "kwok"), "--kubeconfig", kubeconfig,
            "--config", str(components / "config" / "kwok" / "stages.yaml"),
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake",
            "--node-ip", address, "--cidr", "10.244.0.0/16",
            "--server-address", "127.0.0.1:10247",
        ], {})  # fmt: skip


def _documents(*paths: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in paths:
        found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def knative_manifests(components: Path, knative_version: str) -> list[dict[str, Any]]:
    """Knative Serving's own install manifests, from its module's config/, minus what needs a
    pod here: the Deployments (the processes run directly) and cert-manager's Certificate."""
    serving, networking = components / "config" / "serving" / "core", components / "config"
    documents = _documents(
        serving / "100-namespace.yaml",
        serving / "200-serviceaccount.yaml",
        *sorted((serving / "200-roles").glob("*.yaml")),
        *sorted((serving / "300-resources").glob("*.yaml")),
        networking / "caching" / "image.yaml",
        *(networking / "networking" / f"{name}.yaml"
          for name in ("certificate", "domain-claim", "ingress", "serverlessservice")),
        *sorted((serving / "configmaps").glob("*.yaml")),
        networking / "networking" / "config-network.yaml",
        serving / "webhooks" / "secret.yaml",
    )  # fmt: skip
    for document in documents:
        if document["kind"] == "ConfigMap" and document["metadata"]["name"] == "config-deployment":
            document["data"]["queue-sidecar-image"] = QUEUE_IMAGE.format(version=knative_version)
    # The webhook's Service without a selector (no pod backs it) plus an EndpointSlice naming
    # the webhook process's address in the namespace; the port is named like the Service's.
    service = next(
        d for d in _documents(serving / "deployments" / "webhook.yaml") if d["kind"] == "Service"
    )
    del service["spec"]["selector"]
    return [*documents, service]


def _webhook_endpoints(address: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "webhook-process",
            "namespace": SYSTEM_NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": "webhook",
                "endpointslice.kubernetes.io/managed-by": "userapi-harness",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "https-webhook", "port": WEBHOOK_PORT, "protocol": "TCP"}],
    }


def _fake_node() -> dict[str, Any]:
    # kwok fills its status: Ready, addresses, room for any number of pods.
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok"},
        },
    }  # fmt: skip


def _apply(plane: ControlPlane, documents: list[dict[str, Any]]) -> None:
    plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager", "userapi-harness",
        "-f", "-", input=yaml.safe_dump_all(documents), timeout=300,
    )  # fmt: skip


WEBHOOK_PROBE = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Service",
    "metadata": {"name": "webhook-probe", "namespace": "default"},
    "spec": {"template": {"spec": {"containers": [{"image": "dev.local/probe:1"}]}}},
}


def webhook_admits(plane: ControlPlane) -> bool:
    """A server-side dry run of a Knative Service comes back defaulted by the real webhook."""
    result = plane.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-",
        input=json.dumps(WEBHOOK_PROBE), check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return False
    defaulted = json.loads(result.stdout)["spec"]["template"]["spec"]
    return bool(defaulted.get("timeoutSeconds") == 300)  # set by the defaulting webhook only


def _start_knative(plane: ControlPlane) -> None:
    state, netns, kubeconfig = plane.state, plane.netns, str(plane.kubeconfig)
    _apply(plane, knative_manifests(plane.components, plane.knative_version))
    _apply(plane, [_webhook_endpoints(plane.address), _fake_node()])
    common = {
        "KUBECONFIG": kubeconfig,
        "SYSTEM_NAMESPACE": SYSTEM_NAMESPACE,
        "CONFIG_LOGGING_NAME": "config-logging",
        "CONFIG_OBSERVABILITY_NAME": "config-observability",
    }
    if not _alive(state, "webhook"):
        _spawn(state, netns, "webhook", [str(plane.binary("webhook")), "--disable-ha"], {
            **common, "POD_NAME": "webhook-process", "WEBHOOK_NAME": "webhook",
            "WEBHOOK_PORT": str(WEBHOOK_PORT), "PROFILING_PORT": "8009",
            "METRICS_PROMETHEUS_PORT": "9091",
        })  # fmt: skip
    # The webhook configurations only once their webhook answers: their failurePolicy is Fail.
    webhooks = plane.components / "config" / "serving" / "core" / "webhooks"
    names = ("defaulting", "resource-validation", "configmap-validation")
    _apply(plane, _documents(*(webhooks / f"{name}.yaml" for name in names)))
    if not _alive(state, "controller"):
        _spawn(state, netns, "controller", [str(plane.binary("controller"))], {
            **common, "POD_NAME": "controller-process", "PROFILING_PORT": "8008",
            "METRICS_PROMETHEUS_PORT": "9090",
        })  # fmt: skip
    _wait("Knative's webhook", lambda: webhook_admits(plane), 240, state, "webhook")


def _knative_version(components: Path) -> str:
    return components.name.split("-knative-")[1].split("-etcd-")[0]


def up(state: Path = DEFAULT_STATE, *, detached: bool = False) -> ControlPlane:
    """Start (or find running) the control plane whose files live in `state`. Detached, its
    processes outlive the caller (`make cluster`); otherwise they go through harness.processes,
    which stops them when the caller exits, however it exits."""
    state = state.resolve()
    components = build()
    for directory in ("logs", "pids"):
        (state / directory).mkdir(parents=True, exist_ok=True)
    if detached:
        (state / "detached").touch()
    netns, address = _network_up(state)
    token = _credentials(state, address)
    _kubeconfig(state, address, token)
    plane = ControlPlane(state, components, address, netns, _knative_version(components))
    try:
        _start_kubernetes(state, components, netns, address)
        _start_knative(plane)
    except BaseException:
        _stop(state)  # nothing left running; the logs stay for a post-mortem
        _network_down(state)
        raise
    return plane


def down(state: Path = DEFAULT_STATE) -> None:
    """Stop every process `state` started, delete its namespace and its files."""
    state = state.resolve()
    if (state / "pids").exists():
        _stop(state)
    _network_down(state)
    if state.exists():
        subprocess.run(["rm", "-rf", str(state)], check=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.cluster", description=__doc__)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("state", nargs="?", type=Path, default=DEFAULT_STATE)
    args = parser.parse_args(argv)
    try:
        if args.action == "down":
            down(args.state)
            print(f"control plane in {args.state} stopped")
            return 0
        plane = up(args.state, detached=True)
    except ClusterError as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    print(f"API server {plane.server}, Knative Serving {plane.knative_version}, logs in "
          f"{plane.state / 'logs'}")  # fmt: skip
    print(f"KUBECONFIG={plane.kubeconfig}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
