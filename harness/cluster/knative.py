"""Knative Serving's CRDs, webhook and controller on the control plane."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from harness.cluster.kubernetes import wait
from harness.cluster.plane import (
    NODE_NAME,
    QUEUE_IMAGE,
    SYSTEM_NAMESPACE,
    WEBHOOK_PORT,
    ControlPlane,
)
from harness.cluster.supervisor import alive, spawn


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


def webhook_endpoints(address: str) -> dict[str, Any]:
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


def fake_node() -> dict[str, Any]:
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


def apply(plane: ControlPlane, documents: list[dict[str, Any]]) -> None:
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


def start_knative(plane: ControlPlane, *, with_fake_node: bool = True) -> None:
    state, netns, kubeconfig = plane.state, plane.netns, str(plane.kubeconfig)
    apply(plane, knative_manifests(plane.components, plane.knative_version))
    apply(plane, [webhook_endpoints(plane.address), *([fake_node()] if with_fake_node else [])])
    common = {
        "KUBECONFIG": kubeconfig,
        "SYSTEM_NAMESPACE": SYSTEM_NAMESPACE,
        "CONFIG_LOGGING_NAME": "config-logging",
        "CONFIG_OBSERVABILITY_NAME": "config-observability",
    }
    if not alive(state, "webhook"):
        spawn(state, netns, "webhook", [str(plane.binary("webhook")), "--disable-ha"], {
            **common, "POD_NAME": "webhook-process", "WEBHOOK_NAME": "webhook",
            "WEBHOOK_PORT": str(WEBHOOK_PORT), "PROFILING_PORT": "8009",
            "METRICS_PROMETHEUS_PORT": "9091",
        })  # fmt: skip
    # The webhook configurations only once their webhook answers: their failurePolicy is Fail.
    webhooks = plane.components / "config" / "serving" / "core" / "webhooks"
    names = ("defaulting", "resource-validation", "configmap-validation")
    apply(plane, _documents(*(webhooks / f"{name}.yaml" for name in names)))
    if not alive(state, "controller"):
        spawn(state, netns, "controller", [str(plane.binary("controller"))], {
            **common, "POD_NAME": "controller-process", "PROFILING_PORT": "8008",
            "METRICS_PROMETHEUS_PORT": "9090",
        })  # fmt: skip
    wait("Knative's webhook", lambda: webhook_admits(plane), 240, state, "webhook")


# The real node's share of Knative (node.py): its ingress is Traefik, and Services get public
# URLs under example.com (without a domain every Route is cluster-local, which Traefik serves
# on its private entry point only). With mesh compatibility off, the activator and autoscaler
# always talk to pods by their IPs.
NETWORK = {
    "ingress-class": "traefik.ingress.networking.knative.dev",
    "mesh-compatibility-mode": "disabled",
}
DOMAIN = {"example.com": ""}


def data_plane_manifests(plane: ControlPlane, node_name: str) -> list[dict[str, Any]]:
    """Knative's own activator and autoscaler Deployments and Services, their images the ones
    node_images.py imported, pinned to the real node, with requests two cores can hold."""
    from harness.cluster.node_images import ACTIVATOR_IMAGE, AUTOSCALER_IMAGE

    deployments = plane.components / "config" / "serving" / "core" / "deployments"
    images = {"activator": ACTIVATOR_IMAGE, "autoscaler": AUTOSCALER_IMAGE}
    documents = _documents(deployments / "activator.yaml", deployments / "autoscaler.yaml")
    kept = []
    for document in documents:
        if document["kind"] == "Deployment":
            spec = document["spec"]["template"]["spec"]
            spec.pop("affinity", None)
            spec["nodeSelector"] = {"kubernetes.io/hostname": node_name}
            # Teardown and tests do not wait out Knative's 600 s drain.
            spec["terminationGracePeriodSeconds"] = 10
            for container in spec["containers"]:
                name = document["metadata"]["name"]
                container["image"] = images[name].format(version=plane.knative_version)
                container["imagePullPolicy"] = "Never"
                container["resources"] = {"requests": {"cpu": "50m", "memory": "50Mi"},
                                          "limits": {"memory": "600Mi"}}  # fmt: skip
        if document["kind"] in ("Deployment", "Service"):
            kept.append(document)
    return kept


def configure(plane: ControlPlane, configmap: str, data: Mapping[str, str | None]) -> None:
    """Sets keys of one of Knative's ConfigMaps (None removes one); its components watch them."""
    plane.kubectl("patch", "configmap", configmap, "-n", SYSTEM_NAMESPACE, "--type", "merge",
                  "-p", json.dumps({"data": data}))  # fmt: skip


def start_data_plane(plane: ControlPlane, node_name: str, timeout: float = 180) -> None:
    """Traefik as the ingress class, a domain, then the activator and autoscaler as pods;
    returns once the activator is Ready (it is only when its autoscaler connection is up)."""
    for name, data in (("config-network", NETWORK), ("config-domain", DOMAIN)):
        configure(plane, name, data)
    apply(plane, data_plane_manifests(plane, node_name))
    for name in ("autoscaler", "activator"):
        plane.kubectl("rollout", "status", "-n", SYSTEM_NAMESPACE, f"deployment/{name}",
                      f"--timeout={timeout:.0f}s", timeout=timeout + 30)  # fmt: skip
