"""Rules that only Knative's admission webhook enforces, checked offline.

Schemas cannot catch these: annotations are a free string map and feature-flagged fields are
open objects. Sources: knative/serving pkg/apis/serving/k8s_validation.go, fieldmask.go and
pkg/apis/autoscaling/annotation_validation.go (v1.23), summarised in shared reference knative.md.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

AUTOSCALING = "autoscaling.knative.dev/"
RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
PORT_NAMES = {"", "h2c", "http1"}
MAX_TIMEOUT_SECONDS = 600
MAX_CONTAINER_CONCURRENCY = 1000


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _annotation_problems(annotations: dict[str, str]) -> list[str]:
    problems = []
    scale = {
        k.removeprefix(AUTOSCALING): v for k, v in annotations.items() if k.startswith(AUTOSCALING)
    }
    numbers = {k: _int(v) for k, v in scale.items() if k.endswith("-scale")}
    for key, number in numbers.items():
        if number is None or number < 0:
            problems.append(f"{AUTOSCALING}{key} must be an integer >= 0")
    low, high = numbers.get("min-scale") or 0, numbers.get("max-scale") or 0
    if high and low > high:
        problems.append("min-scale must not exceed max-scale")
    activation = numbers.get("activation-scale")
    if activation is not None and (activation < 2 or (high and activation > high)):
        problems.append("activation-scale must be >= 2 and <= max-scale")
    if "target" in scale:
        try:
            if float(scale["target"]) < 0.01:
                problems.append("target must be >= 0.01")
        except ValueError:
            problems.append("target must be a number")
    return problems


def problems(service: dict[str, Any]) -> list[str]:
    """Every reason the webhook would reject this Knative Service (empty: accepted)."""
    found: list[str] = []
    if any(k.startswith(AUTOSCALING) for k in service["metadata"].get("annotations") or {}):
        found.append("autoscaling annotations belong on spec.template.metadata, not the Service")
    template = service["spec"]["template"]
    found += _annotation_problems(template.get("metadata", {}).get("annotations") or {})
    spec = template["spec"]
    for field in ("terminationGracePeriodSeconds", "restartPolicy"):
        if field in spec:
            found.append(f"{field} may not be set on a revision")
    concurrency = spec.get("containerConcurrency", 0)
    if not 0 <= concurrency <= MAX_CONTAINER_CONCURRENCY:
        found.append(f"containerConcurrency must be 0..{MAX_CONTAINER_CONCURRENCY}")
    if spec.get("timeoutSeconds", 300) > MAX_TIMEOUT_SECONDS:
        found.append(f"timeoutSeconds must be <= {MAX_TIMEOUT_SECONDS}")

    containers = spec["containers"]
    names = [c.get("name", "") for c in containers]
    if len(set(names)) != len(names):
        found.append("container names must be unique")
    if "queue-proxy" in names:
        found.append("the container name queue-proxy is reserved")
    serving = [c for c in containers if c.get("ports")]
    if len(serving) != 1:
        found.append(f"exactly one container may declare a port, found {len(serving)}")
    for container in containers:
        name = container.get("name", "?")
        if "lifecycle" in container:
            found.append(f"{name}: lifecycle hooks are not allowed")
        ports = container.get("ports") or []
        if len(ports) > 1:
            found.append(f"{name}: at most one port")
        for port in ports:
            if port.get("name", "") not in PORT_NAMES:
                found.append(f"{name}: port name must be one of {sorted(PORT_NAMES)}")
            if port.get("containerPort") in RESERVED_PORTS:
                found.append(f"{name}: port {port['containerPort']} is reserved")
        if ports:
            reserved = RESERVED_ENV & {e["name"] for e in container.get("env") or []}
            if reserved:
                found.append(f"{name}: env {sorted(reserved)} is reserved")
            probe = container.get("readinessProbe") or {}
            if not probe.get("periodSeconds") and (
                {"failureThreshold", "timeoutSeconds"} & set(probe)
            ):
                found.append(f"{name}: with periodSeconds 0, no failureThreshold/timeoutSeconds")
        else:
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                if probe in container:
                    found.append(f"{name}: sidecars may not have a {probe}")

    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    if len(volumes) != len(spec.get("volumes") or []):
        found.append("volume names must be unique")
    # A writable secret or configMap mount is no rule to check: Knative's defaulting webhook makes
    # it readOnly before validation sees it (the real webhook admits it, tests/cluster).
    mounted = {m["name"] for c in containers for m in c.get("volumeMounts") or []}
    for unmounted in sorted(set(volumes) - mounted):
        found.append(f"volume {unmounted} is not mounted")
    return found


# Each rule above as the one change to a valid Service that breaks it. The offline check must catch
# every case (tests/deploy/test_helm.py) and Knative's real webhook must refuse every case
# (tests/cluster/test_knative_webhook.py): the two stay in step.


def _spec(s: dict[str, Any]) -> dict[str, Any]:
    return s["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _app(s: dict[str, Any]) -> dict[str, Any]:
    return _spec(s)["containers"][0]  # type: ignore[no-any-return]


def _sidecar(s: dict[str, Any]) -> dict[str, Any]:
    return _spec(s)["containers"][1]  # type: ignore[no-any-return]


BROKEN: dict[str, Callable[[dict[str, Any]], None]] = {
    "annotation on the Service": lambda s: (
        s["metadata"]
        .setdefault("annotations", {})
        .update({"autoscaling.knative.dev/min-scale": "1"})
    ),
    "negative min-scale": lambda s: s["spec"]["template"]["metadata"]["annotations"].update(
        {"autoscaling.knative.dev/min-scale": "-1"}
    ),
    "min above max": lambda s: s["spec"]["template"]["metadata"]["annotations"].update(
        {"autoscaling.knative.dev/min-scale": "20"}
    ),
    "activation-scale 1": lambda s: s["spec"]["template"]["metadata"]["annotations"].update(
        {"autoscaling.knative.dev/activation-scale": "1"}
    ),
    "target too small": lambda s: s["spec"]["template"]["metadata"]["annotations"].update(
        {"autoscaling.knative.dev/target": "0.001"}
    ),
    "second port": lambda s: _sidecar(s).update({"ports": [{"containerPort": 6432}]}),
    "no port": lambda s: _app(s).pop("ports"),
    "reserved port": lambda s: _app(s)["ports"][0].update({"containerPort": 8012}),
    "bad port name": lambda s: _app(s)["ports"][0].update({"name": "web"}),
    "reserved env": lambda s: _app(s)["env"].append({"name": "PORT", "value": "1"}),
    "queue-proxy name": lambda s: _sidecar(s).update({"name": "queue-proxy"}),
    "lifecycle": lambda s: _sidecar(s).update(
        {"lifecycle": {"preStop": {"exec": {"command": ["x"]}}}}
    ),
    "grace period": lambda s: _spec(s).update({"terminationGracePeriodSeconds": 30}),
    "sidecar probe": lambda s: _sidecar(s).update(
        {"readinessProbe": {"tcpSocket": {"port": 6432}}}
    ),
    "probe threshold without period": lambda s: _app(s)["readinessProbe"].update(
        {"failureThreshold": 3}
    ),
    "unmounted volume": lambda s: _spec(s)["volumes"].append({"name": "extra", "emptyDir": {}}),
    "timeout too long": lambda s: _spec(s).update({"timeoutSeconds": 601}),
    "concurrency too high": lambda s: _spec(s).update({"containerConcurrency": 1001}),
}


def broken(service: dict[str, Any], case: str) -> dict[str, Any]:
    """A copy of a valid Knative Service (the chart's get-user) broken the way `case` names."""
    copied = copy.deepcopy(service)
    BROKEN[case](copied)
    return copied
