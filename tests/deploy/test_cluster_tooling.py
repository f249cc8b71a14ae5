"""`userapi cluster …` through the real kubernetes client, against a stub API server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from userapi.commands.cluster_status import Cluster

from harness.processes import free_port, wait_for_port

USERAPI = str(Path(sys.executable).parent / "userapi")


class StubAPIServer:
    """Enough of the Kubernetes API for the tool: Knative Services and pods, by label."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.pods: dict[str, list[dict[str, Any]]] = {"get-user": [], "list-users": [self._pod(0)]}
        app = Starlette(
            routes=[
                Route("/apis/serving.knative.dev/v1/namespaces/userapi/services", self._services),
                Route("/api/v1/namespaces/userapi/pods", self._pods),
                Route("/ksvc/{name}/healthz", self._wake),
            ]
        )
        self.server = uvicorn.Server(uvicorn.Config(app, port=self.port, log_level="warning"))

    def _pod(self, ready_after: float) -> dict[str, Any]:
        created = datetime.now(UTC)
        ready = (created + timedelta(seconds=ready_after)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "metadata": {
                "name": f"p{time.monotonic_ns()}",
                "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready}]
            },
        }

    def _service(self, name: str, min_scale: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {
                "template": {
                    "metadata": {
                        "annotations": {
                            "autoscaling.knative.dev/min-scale": min_scale,
                            "autoscaling.knative.dev/max-scale": "10",
                        }
                    }
                }
            },
            "status": {
                "url": f"{self.base}/ksvc/{name}",
                "latestReadyRevisionName": f"{name}-00001",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }

    async def _services(self, _: Request) -> Response:
        items = [
            self._service("get-user", "0"),
            self._service("list-users", "1"),
            {"metadata": {"name": "not-ours"}, "spec": {"template": {}}},
        ]
        return JSONResponse(
            {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "ServiceList",
                "metadata": {},
                "items": items,
            }
        )

    async def _pods(self, request: Request) -> Response:
        name = request.query_params.get("labelSelector", "").split("=")[-1]
        return JSONResponse(
            {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {},
                "items": self.pods.get(name, []),
            }
        )

    async def _wake(self, request: Request) -> Response:
        # Scale from zero: a pod appears and becomes ready 2 s after its creation.
        self.pods[request.path_params["name"]] = [self._pod(2)]
        return JSONResponse({"status": "ok"})

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: stub\n"
            f"clusters: [{{name: stub, cluster: {{server: '{self.base}'}}}}]\n"
            "users: [{name: stub, user: {token: test}}]\n"
            "contexts: [{name: stub, context: {cluster: stub, user: stub}}]\n"
        )
        return path


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[tuple[StubAPIServer, Path]]:
    server = StubAPIServer()
    thread = threading.Thread(target=server.server.run, daemon=True)
    thread.start()
    wait_for_port("127.0.0.1", server.port, 10)
    yield server, server.kubeconfig(tmp_path / "kubeconfig")
    server.server.should_exit = True
    thread.join(timeout=10)


def test_status_lists_only_userapi_endpoints_with_pods_and_scale(stub) -> None:
    _, kubeconfig = stub
    rows = {r.name: r for r in Cluster("userapi", str(kubeconfig)).status()}
    assert set(rows) == {"get-user", "list-users"}
    assert (rows["get-user"].pods, rows["get-user"].min_scale) == (0, "0")
    assert (rows["list-users"].pods, rows["list-users"].min_scale) == (1, "1")
    assert rows["get-user"].ready
    assert rows["get-user"].latest_revision == "get-user-00001"


def test_the_cli_prints_status_and_urls(stub) -> None:
    server, kubeconfig = stub
    status = subprocess.run(
        [USERAPI, "cluster", "status", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert status.splitlines()[0].split() == [
        "ENDPOINT",
        "READY",
        "PODS",
        "MIN",
        "MAX",
        "REVISION",
        "URL",
    ]
    assert "get-user" in status
    assert "list-users" in status
    urls = subprocess.run(
        [USERAPI, "cluster", "urls", "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert f"get-user\t{server.base}/ksvc/get-user" in urls


def test_coldstart_times_the_first_request_and_the_pod_readiness(stub) -> None:
    _, kubeconfig = stub
    result = Cluster("userapi", str(kubeconfig)).coldstart(
        "get-user", path="/healthz", token=None, idle_timeout=5
    )
    assert result.status == 200
    assert 0 < result.first_response_seconds < 5
    assert result.pod_ready_seconds == 2.0


def test_coldstart_gives_up_when_the_endpoint_never_idles(stub) -> None:
    _, kubeconfig = stub
    with pytest.raises(TimeoutError):
        Cluster("userapi", str(kubeconfig)).coldstart(
            "list-users", path="/healthz", token=None, idle_timeout=0.1
        )
