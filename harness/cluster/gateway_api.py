"""Gateway API's CRDs, from the sigs.k8s.io/gateway-api Go module at the version the node's
Traefik is built against: controlplane/traefik/go.mod requires it and its go.sum pins its hash,
so `go mod download` there finds (or fetches through the Go module proxy, checked against that hash)
exactly that module. Its config/crd/standard/ is what `kubectl apply` of Gateway API's release
installs: the node's cluster installs them, and tests/deploy validates the chart's Gateway,
HTTPRoute and ReferenceGrant against their schemas.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from harness.cluster.plane import ROOT, ClusterError

MODULE = "sigs.k8s.io/gateway-api"
PINNED_BY = ROOT / "controlplane" / "traefik"


@functools.cache
def module() -> tuple[str, Path]:
    """(version, directory) of the pinned Gateway API module, in the control plane's Go cache."""
    go = shutil.which("go") or "/usr/local/go/bin/go"
    cache = Path(os.environ.get("USERAPI_CACHE") or Path.home() / ".cache" / "userapi")
    env = {**os.environ, "GOMODCACHE": str(cache / "go" / "mod"), "GOFLAGS": "-mod=readonly",
           "GOTOOLCHAIN": "local"}  # fmt: skip
    # The version in Traefik's build list, fetched if missing and checked against its go.sum.
    result = subprocess.run(
        [go, "mod", "download", "-json", MODULE],
        cwd=PINNED_BY, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ClusterError(f"go mod download {MODULE} in {PINNED_BY}: {result.stderr.strip()}")
    found = json.loads(result.stdout)
    return found["Version"], Path(found["Dir"])


def crds() -> list[dict[str, Any]]:
    """The standard channel's CustomResourceDefinitions (GatewayClass, Gateway, HTTPRoute,
    GRPCRoute, ReferenceGrant, BackendTLSPolicy)."""
    _, directory = module()
    found = []
    for path in sorted((directory / "config" / "crd" / "standard").glob("*.yaml")):
        found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """{(apiVersion, kind): openAPIV3Schema} of every served version."""
    found = {}
    for crd in crds():
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                found[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return found
