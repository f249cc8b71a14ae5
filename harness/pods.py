"""Kubernetes pod specs run as pods under `podman kube play`, the way a kubelet would run them.

`run_pod` takes any PodSpec (a Knative Service's `spec.template.spec` through
`knative_pod_spec`, a Job's pod template, a Deployment's pod template with queue-proxy) with the
Secrets and ConfigMaps it references, and returns a running `Pod`: one network namespace for
its containers, the spec's own commands, users, capabilities, read-only root filesystems and
mounts. Where podman 4.3 (Debian 12) differs from the kubelet, the harness adapts the copy of the
spec it hands to podman, never the chart; each adaptation names its podman issue:

- podman#16636: a secret volume without an explicit `optional` crashes kube play (SIGSEGV):
  the copy sets `optional: false`, the kubelet's default.
- podman#16625: podman writes a Secret's `data` into secret volume files verbatim (base64 text)
  where the kubelet writes the decoded bytes: podman gets the Secret with decoded data.
- podman 4.3 reads a `secretKeyRef`'s secret as a flat JSON object {key: base64}, not as a
  Secret (`secret ... is not valid JSON` otherwise): such secrets are created in that shape.
  One secret can therefore not serve both as a volume and as env here; run_pod refuses that.
- `podman pod stop` takes the pod's network down before it signals the containers, cutting
  requests in flight; the kubelet signals the containers and leaves the network up until they
  are gone. `Pod.terminate` sends SIGTERM to the containers themselves (podman kill), all at
  once, and enforces the grace period itself (podman 4.3 ignores terminationGracePeriodSeconds).
- podman#17829: podman 4.3 ignores a secret volume's `items` and mounts every key: podman gets
  a Secret holding only the listed keys (under their `path`s) for that volume.
- podman 4.3 makes an emptyDir a volume named after it (podman#15473), so two pods with the
  same emptyDir name collide (`volume already exists`) or share it: the copy names each
  emptyDir `<pod>-<volume>` (its mounts follow).
- `emptyDir.medium: Memory` is ignored by podman 4.3: those volumes are on disk (still empty
  and writable per pod, which is all the chart relies on).
- containerPort without hostPort is not reachable from the host: the copy adds hostPort for the
  ports the caller publishes.
- podman restarts a container that exits after `podman kill` when the pod's restartPolicy is
  Always (the kubelet's default), where a kubelet deleting a pod restarts nothing: the copy's
  restartPolicy is Never unless the caller asks otherwise, so a crash also shows as a failure
  instead of a quiet restart.
- Jobs cannot be played by podman 4.3: `job_pod_spec` runs a Job's pod template as a pod.
- podman 4.3 resolves only `metadata.name`, `metadata.uid` and single annotations in an env
  `fieldRef` ("fieldPath ... is either not valid or not supported" otherwise); Knative's
  queue-proxy also reads `metadata.namespace`, `status.podIP` and `status.hostIP`. The copy
  gives those the values the kubelet would: the `namespace` passed to run_pod, the pod's
  slirp4netns address (`POD_IP`) and the host as the pod sees it (`HOST_FROM_POD`).
- podman 4.3 runs neither probes nor lifecycle hooks. `Pod.probe` performs a container's probe
  as the kubelet does (its User-Agent included, which Knative's queue-proxy tells apart), and
  `Pod.terminate` runs each container's preStop hook before that container's SIGTERM, as the
  kubelet does. The kubelet calls the pod's IP on any port; the harness reaches the pod only
  through published ports, so the copy publishes the ports those use (declaring the ones the
  spec does not, such as queue-proxy's admin port 8022, which Knative's preStop hook calls).

Networking: the pod has its own network namespace (slirp4netns); the host's loopback, where
the tests run Redis, PostgreSQL and the Auth0 emulator, is `HOST_FROM_POD` (10.0.2.2) inside it,
and the pod's own address is `POD_IP` (10.0.2.100, slirp4netns's fixed guest address).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets as random_tokens
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.podman import HOST_FROM_POD, POD_NETWORK, Podman, PodmanError
from harness.processes import free_port

__all__ = [
    "HOST_FROM_POD",
    "POD_IP",
    "Pod",
    "job_pod_spec",
    "knative_pod_spec",
    "run_pod",
]


# slirp4netns gives the pod's tap device this address (its --cidr default 10.0.2.0/24, guest .100).
POD_IP = "10.0.2.100"
# What the kubelet sends as User-Agent on probes: Knative's queue-proxy answers a probe that
# carries it from its health check (and 503 while draining) instead of proxying it.
KUBELET_PROBE_AGENT = "kube-probe/1.35"


def knative_pod_spec(service: Mapping[str, Any]) -> dict[str, Any]:
    """The PodSpec Knative makes of a Service's revision template: the revision-only fields
    (containerConcurrency, timeoutSeconds) dropped and, as Knative does, the termination grace
    period set to timeoutSeconds. (queue-proxy, which Knative also adds, is not: that is the
    Knative data path, exercised only on a cluster.)"""
    spec = copy.deepcopy(dict(service["spec"]["template"]["spec"]))
    timeout = spec.pop("timeoutSeconds", 300)
    spec.pop("containerConcurrency", None)
    spec.setdefault("terminationGracePeriodSeconds", timeout)
    return spec


def job_pod_spec(job: Mapping[str, Any]) -> dict[str, Any]:
    """A Job's pod template, to run once as a pod (podman 4.3 cannot play Jobs; the Job's own
    retries are not reproduced: one failure is a failure)."""
    return copy.deepcopy(dict(job["spec"]["template"]["spec"]))


@dataclass
class Pod:
    podman: Podman
    name: str
    spec: dict[str, Any]  # what podman was given, adaptations included
    ports: dict[int, int]  # containerPort -> host port on 127.0.0.1
    containers: dict[str, str] = field(default_factory=dict)  # spec name -> podman name
    # What each container's preStop hook did in the last terminate(): "ok" or why it failed.
    hooks: dict[str, str] = field(default_factory=dict)

    @property
    def grace_seconds(self) -> float:
        return float(self.spec.get("terminationGracePeriodSeconds", 30))

    def url(self, port: int = 8080) -> str:
        return f"http://127.0.0.1:{self.ports[port]}"

    def logs(self, container: str | None = None) -> str:
        names = [container] if container else list(self.containers)
        return "\n".join(
            f"--- {name} ---\n{self.podman.logs(self.containers[name])}" for name in names
        )

    def pid(self, container: str) -> int:
        return self.podman.pid(self.containers[container])

    def exec(self, container: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self.podman.exec(self.containers[container], *command)

    def status(self, container: str) -> dict[str, str]:
        return self.podman.status(self.containers[container])

    def tcp_peers(self, container: str) -> set[tuple[str, int]]:
        return self.podman.tcp_peers(self.containers[container])

    def rss_bytes(self, container: str) -> int:
        return self.podman.rss_bytes(self.containers[container])

    def running(self, container: str) -> bool:
        return self.podman.running(self.containers[container])

    def exit_code(self, container: str) -> int:
        return self.podman.exit_code(self.containers[container])

    def wait_exited(self, container: str, timeout: float) -> int:
        self.podman.wait_exited([self.containers[container]], timeout)
        return self.exit_code(container)

    def container_spec(self, container: str) -> dict[str, Any]:
        return next(c for c in _containers(self.spec) if c["name"] == container)

    def probe(self, container: str, kind: str = "readinessProbe") -> bool:
        """One run of the container's `kind` probe, as the kubelet runs it (httpGet with its
        headers and the kubelet's User-Agent, tcpSocket, or exec), against the published port.
        A container without that probe counts as passing, as it does for the kubelet."""
        probe = self.container_spec(container).get(kind)
        if not probe:
            return True
        timeout = float(probe.get("timeoutSeconds", 1))
        if "exec" in probe:
            return self.exec(container, *probe["exec"]["command"]).returncode == 0
        if "tcpSocket" in probe:
            port = self._port(container, probe["tcpSocket"]["port"])
            try:
                socket.create_connection(("127.0.0.1", self.ports[port]), timeout).close()
            except OSError:
                return False
            return True
        status = self._http_get(container, probe["httpGet"], timeout)
        return 200 <= status < 400

    def _port(self, container: str, port: int | str) -> int:
        """A numeric port, or the containerPort of the container's port of that name."""
        if isinstance(port, int) or port.isdigit():
            return int(port)
        spec = self.container_spec(container)
        return int(next(p["containerPort"] for p in spec.get("ports", []) if p.get("name") == port))

    def _http_get(self, container: str, action: Mapping[str, Any], timeout: float) -> int:
        """The status of the kubelet's GET for a probe or hook (0 when nothing answered)."""
        port = self.ports[self._port(container, action["port"])]
        path = action.get("path") or "/"
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        request.add_header("User-Agent", KUBELET_PROBE_AGENT)
        for header in action.get("httpHeaders", []):
            request.add_header(header["name"], header["value"])
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, TimeoutError):
            return 0

    def _pre_stop(self, container: str, remaining: float) -> None:
        """The container's preStop hook, given at most the rest of the grace period; like the
        kubelet, a failed hook is noted and the container is stopped anyway."""
        hook = (self.container_spec(container).get("lifecycle") or {}).get("preStop")
        if not hook:
            return
        if "httpGet" in hook:
            status = self._http_get(container, hook["httpGet"], remaining)
            self.hooks[container] = "ok" if 200 <= status < 400 else f"HTTP {status}"
        elif "exec" in hook:
            result = self.exec(container, *hook["exec"]["command"])
            self.hooks[container] = "ok" if result.returncode == 0 else f"exit {result.returncode}"
        elif "sleep" in hook:
            time.sleep(min(float(hook["sleep"]["seconds"]), remaining))
            self.hooks[container] = "ok"
        else:
            raise ValueError(f"{container}: preStop {sorted(hook)} is not supported here")

    def terminate(self, grace: float | None = None) -> dict[str, tuple[int, float]]:
        """Stops the pod as the kubelet does on deletion, its network left up: every container
        at once runs its preStop hook, then gets SIGTERM, all within one grace period. Returns
        each container's exit code and the seconds from the start until it exited; raises if
        one outlives the grace period (SIGKILLed then, as the kubelet would)."""
        limit = self.grace_seconds if grace is None else grace
        started = time.monotonic()
        deadline = started + limit
        self.hooks = {}
        exited: dict[str, float] = {}
        failures: list[str] = []

        def stop(name: str) -> None:
            try:
                self._pre_stop(name, deadline - time.monotonic())
                self.podman.signal([self.containers[name]], "TERM")
                self.podman.wait_exited([self.containers[name]], deadline - time.monotonic())
                exited[name] = time.monotonic() - started
            except PodmanError as exc:
                failures.append(str(exc))

        threads = [
            threading.Thread(target=stop, args=(name,))
            for name in self.containers
            if self.running(name)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            left = [self.containers[n] for n in self.containers if self.running(n)]
            if left:
                self.podman.signal(left, "KILL")
            raise PodmanError("\n".join(failures) + "\n" + self.logs())
        return {name: (self.exit_code(name), seconds) for name, seconds in exited.items()}

    def remove(self) -> None:
        self.podman("pod", "rm", "--force", "--time", "0", self.name, check=False)


def _containers(spec: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def _secret_uses(spec: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(secrets read through env, secrets mounted as volumes)."""
    as_env: set[str] = set()
    for container in _containers(spec):
        for variable in container.get("env", []):
            ref = (variable.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                as_env.add(ref["name"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                as_env.add(source["secretRef"]["name"])
    as_volume = {
        volume["secret"]["secretName"] for volume in spec.get("volumes", []) if "secret" in volume
    }
    return as_env, as_volume


def _kubelet_ports(spec: Mapping[str, Any]) -> dict[int, str]:
    """The ports the kubelet itself calls (probes, httpGet and tcpSocket hooks), each with the
    container whose probe or hook calls it. Named ports resolve to that container's number."""
    ports: dict[int, str] = {}
    for container in _containers(spec):
        named = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        kinds = ("readinessProbe", "livenessProbe", "startupProbe")
        actions = [container.get(kind) or {} for kind in kinds]
        actions.append((container.get("lifecycle") or {}).get("preStop") or {})
        for action in actions:
            for way in ("httpGet", "tcpSocket"):
                if way in action:
                    port = action[way]["port"]
                    ports.setdefault(int(named.get(port, port)), container["name"])
    return ports


# The fieldRefs podman 4.3 resolves itself; the rest get the kubelet's value in the copy.
_PODMAN_FIELDS = ("metadata.name", "metadata.uid")


def _field_values(namespace: str) -> dict[str, str]:
    return {"metadata.namespace": namespace, "status.podIP": POD_IP, "status.podIPs": POD_IP,
            "status.hostIP": HOST_FROM_POD, "status.hostIPs": HOST_FROM_POD}  # fmt: skip


def _adapt(
    pod_name: str,
    spec: Mapping[str, Any],
    publish: Mapping[int, int],
    secrets: dict[str, Mapping[str, str]],
    restart_policy: str,
    namespace: str = "default",
) -> dict[str, Any]:
    """The copy of `spec` podman gets; `secrets` receives the Secrets made for `items`."""
    adapted = copy.deepcopy(dict(spec))
    adapted["restartPolicy"] = restart_policy
    fields = _field_values(namespace)
    for container in _containers(adapted):
        for variable in container.get("env", []):
            ref = (variable.get("valueFrom") or {}).get("fieldRef")
            if not ref or ref["fieldPath"] in _PODMAN_FIELDS:
                continue
            if ref["fieldPath"] not in fields:
                raise ValueError(f"env {variable['name']}: fieldRef {ref['fieldPath']} unsupported")
            variable.pop("valueFrom")
            variable["value"] = fields[ref["fieldPath"]]
    renamed = {
        volume["name"]: f"{pod_name}-{volume['name']}"
        for volume in adapted.get("volumes", [])
        if "emptyDir" in volume
    }  # podman#15473
    for volume in adapted.get("volumes", []):
        volume["name"] = renamed.get(volume["name"], volume["name"])
    for container in _containers(adapted):
        for mount in container.get("volumeMounts", []):
            mount["name"] = renamed.get(mount["name"], mount["name"])
    for volume in adapted.get("volumes", []):
        if "secret" not in volume:
            continue
        source = volume["secret"]
        source.setdefault("optional", False)  # podman#16636
        items = source.pop("items", None)
        if items:  # podman#17829
            data = secrets[source["secretName"]]
            projected = {item["path"]: data[item["key"]] for item in items}
            if any("/" in path for path in projected):
                raise ValueError(f"volume {volume['name']}: item paths with directories")
            digest = hashlib.sha256(json.dumps(sorted(projected)).encode()).hexdigest()[:8]
            derived = f"{source['secretName']}-items-{digest}"
            secrets[derived] = projected
            source["secretName"] = derived
    for container in _containers(adapted):
        for port in container.get("ports", []):
            if port["containerPort"] in publish:
                port["hostPort"] = publish[port["containerPort"]]
                port["hostIP"] = "127.0.0.1"
    return adapted


def _create_secret(podman: Podman, name: str, data: Mapping[str, str], *, as_env: bool) -> None:
    if as_env:
        # podman 4.3's secretKeyRef: a flat JSON object of base64 values.
        content = json.dumps(
            {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
        )
    else:
        # podman#16625: volume files get `data` verbatim, so podman gets it decoded.
        content = json.dumps(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": dict(data)}
        )
    with podman.lock:
        created = podman.secrets
        if created.get(name) == content:
            return  # pods share a Secret as they do in a namespace
        if name in created:
            podman("secret", "rm", name)  # fails while a container uses the old value
        podman("secret", "create", name, "-", input_text=content)
        created[name] = content


def run_pod(
    podman: Podman,
    name: str,
    spec: Mapping[str, Any],
    *,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    configmaps: Mapping[str, Mapping[str, str]] | None = None,
    publish: Mapping[int, int] | None = None,
    labels: Mapping[str, str] | None = None,
    workdir: Path | None = None,
    restart_policy: str = "Never",
    namespace: str = "default",
) -> Pod:
    """Plays `spec` as pod `name` and returns it once every container has started.

    `secrets` and `configmaps` map each name the spec references to its plain-text data (the
    harness encodes it as podman needs); `publish` maps a containerPort to a host port on
    127.0.0.1. The caller waits for readiness itself (podman 4.3 ignores readiness probes).
    `restart_policy` replaces the spec's (see the module's notes). `namespace` is what the
    pod's `metadata.namespace` fieldRefs read. The ports the kubelet calls (probes, hooks) are
    published too, on free ports."""
    secrets = secrets or {}
    configmaps = configmaps or {}
    publish = dict(publish or {})
    declared = {p["containerPort"] for c in _containers(spec) for p in c.get("ports", [])}
    for undeclared in sorted(set(publish) - declared):
        raise ValueError(f"port {undeclared} is published but no container declares it")
    kubelet_ports = _kubelet_ports(spec)
    for port in sorted(set(kubelet_ports) - set(publish)):
        publish[port] = free_port()
    for missing in sorted(set().union(*_secret_uses(spec)) - set(secrets)):
        raise ValueError(f"the pod spec references Secret {missing!r}, which was not given")
    given = dict(secrets)
    adapted = _adapt(name, spec, publish, given, restart_policy, namespace)
    for port, owner in kubelet_ports.items():
        if port not in declared:  # the kubelet calls the pod's IP; podman publishes declared ports
            container = next(c for c in _containers(adapted) if c["name"] == owner)
            container.setdefault("ports", []).append(
                {"containerPort": port, "hostPort": publish[port], "hostIP": "127.0.0.1"}
            )
    as_env, as_volume = _secret_uses(adapted)
    for both in sorted(as_env & as_volume):
        raise ValueError(f"podman 4.3 cannot use Secret {both!r} both as env and as a volume")
    for secret_name in sorted(as_env | as_volume):
        _create_secret(podman, secret_name, given[secret_name], as_env=secret_name in as_env)

    workdir = workdir or podman.root / "pods" / f"{name}-{random_tokens.token_hex(3)}"
    workdir.mkdir(parents=True, exist_ok=True)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": adapted,
    }
    manifest = workdir / "pod.json"
    manifest.write_text(json.dumps(pod, indent=1))
    args = ["kube", "play", "--network", POD_NETWORK]
    for configmap_name, data in sorted(configmaps.items()):
        path = workdir / f"configmap-{configmap_name}.json"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": configmap_name},
                    "data": dict(data),
                }
            )
        )
        args += ["--configmap", str(path)]
    podman(*args, str(manifest), timeout=180)
    started = Pod(
        podman,
        name,
        adapted,
        {port: host for port, host in publish.items()},
        {c["name"]: f"{name}-{c['name']}" for c in adapted.get("containers", [])},
    )
    return started
