"""End to end on a real Knative cluster: deploy the local overlay, call every endpoint, watch it
scale to zero, time a cold start.

Runs only when USERAPI_E2E_KUBECONFIG names a cluster with Knative Serving where the image
kind.local/userapi:dev is loaded (docs/deploying.md, "kind, with kubectl"):

    kn quickstart kind
    docker build -t kind.local/userapi:dev .
    kind load docker-image kind.local/userapi:dev --name knative
    USERAPI_E2E_KUBECONFIG=~/.kube/config make test

It has not run in this repository's CI, which has no cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from userapi.endpoints import ENDPOINTS

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = os.environ.get("USERAPI_E2E_KUBECONFIG")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not KUBECONFIG, reason="set USERAPI_E2E_KUBECONFIG to a Knative cluster"),
]


def kubectl(*args: str, timeout: float = 300) -> str:
    binary = shutil.which("kubectl")
    assert binary, "kubectl is needed for the e2e tests"
    return subprocess.run(
        [binary, "--kubeconfig", str(KUBECONFIG), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout


@pytest.fixture(scope="module")
def deployed() -> Iterator[dict[str, str]]:
    kubectl("apply", "-k", str(ROOT / "manifests" / "overlays" / "local"))
    kubectl(
        "-n",
        "userapi",
        "wait",
        "--for=condition=complete",
        "job/userapi-migrate",
        "--timeout=300s",
        timeout=320,
    )
    kubectl(
        "-n",
        "userapi",
        "wait",
        "ksvc",
        "--all",
        "--for=condition=Ready",
        "--timeout=300s",
        timeout=320,
    )
    services = json.loads(kubectl("-n", "userapi", "get", "ksvc", "-o", "json"))["items"]
    yield {s["metadata"]["name"]: s["status"]["url"] for s in services}
    kubectl("delete", "-k", str(ROOT / "manifests" / "overlays" / "local"), "--wait=false")


@pytest.fixture(scope="module")
def token() -> Iterator[str]:
    forward = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(KUBECONFIG),
            "-n",
            "userapi",
            "port-forward",
            "svc/auth0-emulator",
            "18765:8765",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            try:
                response = httpx.post(
                    "http://127.0.0.1:18765/__emulator/tokens",
                    json={
                        "sub": "auth0|64f1c2a9e4b0a1b2c3d4e5f6",
                        "permissions": [
                            "read:users",
                            "create:users",
                            "update:users",
                            "delete:users",
                        ],
                    },
                )
                yield str(response.json()["access_token"])
                return
            except httpx.TransportError:
                time.sleep(0.2)
        pytest.fail("could not reach the in-cluster emulator")
    finally:
        forward.terminate()


def test_every_endpoint_answers_at_its_own_url(deployed: dict[str, str], token: str) -> None:
    assert set(deployed) == set(ENDPOINTS)
    auth = {"Authorization": f"Bearer {token}"}
    me = httpx.get(deployed["get-user"] + "/users/me", headers=auth, timeout=60)
    assert me.status_code == 200, me.text
    assert httpx.get(deployed["list-users"] + "/users", headers=auth, timeout=60).status_code == 200
    created = httpx.post(
        deployed["create-user"] + "/users",
        headers=auth,
        timeout=60,
        json={"email": f"e2e-{time.time_ns()}@example.com", "password": "E2e-passw0rd!"},
    )
    assert created.status_code == 201, created.text
    path = created.headers["location"]
    patched = httpx.patch(
        deployed["update-user"] + path, headers=auth, json={"name": "E2E"}, timeout=60
    )
    assert patched.status_code == 200
    assert httpx.delete(deployed["delete-user"] + path, headers=auth, timeout=60).status_code == 204
    unauthorised = httpx.post(deployed["auth0-events"] + "/events/auth0", json={}, timeout=60)
    assert unauthorised.status_code == 401


def test_scale_to_zero_and_cold_start(deployed: dict[str, str], token: str) -> None:
    from userapi.commands.cluster_status import Cluster

    cluster = Cluster("userapi", KUBECONFIG)
    result = cluster.coldstart("get-user", path="/users/me", token=token, idle_timeout=600)
    assert result.status == 200
    print(
        f"\ncold start get-user: first response {result.first_response_seconds:.2f}s, "
        f"pod ready {result.pod_ready_seconds}s"
    )
