"""The Helm chart rendered with the test release's values, and the overlays built by kubectl."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

from harness.cluster import kubectl_binary
from manifests.generate import CHART, OVERLAYS, deep_merge, render_chart

__all__ = [
    "CHART",
    "GLOBAL",
    "KUBERNETES_VERSION",
    "OVERLAYS",
    "OVERRIDE",
    "REQUIRED",
    "TOLERATION",
    "build_overlay",
    "every_knob",
    "knative_services",
    "render",
]

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.32"
# What an install must set (values.schema.json requires it).
REQUIRED = {
    "auth0": {
        "domain": "example.us.auth0.com",
        "audience": "https://api.example.com",
        "clientId": "m2m-client",
    },
    "database": {"host": "postgres.example.internal"},
}


# Every standard pod knob set globally (GLOBAL) and overridden for get-user (OVERRIDE).
TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "api", "effect": "NoSchedule"}
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["api"]}]}
            ]
        }
    }
}
SPREAD = {
    "maxSkew": 1,
    "topologyKey": "topology.kubernetes.io/zone",
    "whenUnsatisfiable": "ScheduleAnyway",
    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "userapi"}},
}
GLOBAL = {
    "podAnnotations": {"example.com/team": "identity"},
    "podLabels": {"example.com/tier": "api"},
    "nodeSelector": {"pool": "api"},
    "tolerations": [TOLERATION],
    "affinity": AFFINITY,
    "topologySpreadConstraints": [SPREAD],
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    "extraEnvFrom": [{"secretRef": {"name": "proxy-credentials"}}],
    "imagePullSecrets": [{"name": "regcred"}],
}
# Maps add to the global map key by key; lists and affinity replace it.
OVERRIDE = {
    "podAnnotations": {"example.com/owner": "get-user"},
    "podLabels": {"example.com/tier": "edge"},
    "nodeSelector": {"zone": "a"},
    "tolerations": [],
    "affinity": {"podAntiAffinity": {}},
    "topologySpreadConstraints": [{**SPREAD, "maxSkew": 2}],
    "extraEnv": [{"name": "LOG_LEVEL", "value": "DEBUG"}],
    "extraEnvFrom": [{"configMapRef": {"name": "get-user-extra"}}],
    "imagePullSecrets": [{"name": "other-regcred"}],
    "serviceAccountName": "get-user-identity",
}


def every_knob() -> dict[str, Any]:
    """Values with every knob set, globally and for get-user, and a cloud identity."""
    return {
        **copy.deepcopy(GLOBAL),
        "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "u@p.iam"}},
        "endpoints": {"getUser": copy.deepcopy(OVERRIDE)},
    }


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart installed as release `demo` with REQUIRED under `values`."""
    merged = deep_merge(copy.deepcopy(REQUIRED), values or {})
    return render_chart(merged, name="demo", is_install=True)


def knative_services(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o
        for o in objects
        if o["apiVersion"].startswith("serving.knative.dev")
    }


def build_overlay(overlay: str) -> list[dict[str, Any]]:
    # The kubectl built with the control plane (controlplane/): never skipped for a missing one.
    out = subprocess.run(
        [str(kubectl_binary()), "kustomize", str(ROOT / "manifests" / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]
