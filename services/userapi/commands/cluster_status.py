"""`userapi cluster status | urls | coldstart`: what the endpoints' Knative Services are doing.

Operator tooling on the `kubernetes` client (the `cluster` extra). Serving never imports it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from userapi.endpoints import ENDPOINTS

GROUP, VERSION = "serving.knative.dev", "v1"


@dataclass(frozen=True)
class EndpointStatus:
    name: str
    url: str | None
    ready: bool
    latest_revision: str | None
    pods: int
    min_scale: str
    max_scale: str


@dataclass(frozen=True)
class ColdStart:
    endpoint: str
    first_response_seconds: float  # request sent with zero pods -> response received
    status: int
    pod_ready_seconds: float | None  # the new pod: created -> Ready


class Cluster:
    def __init__(self, namespace: str, kubeconfig: str | None = None) -> None:
        from kubernetes import client, config

        try:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        self.namespace = namespace
        self._custom = client.CustomObjectsApi()
        self._core = client.CoreV1Api()

    def _services(self) -> list[dict[str, Any]]:
        listed = self._custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "services"
        )
        assert isinstance(listed, dict)
        return [s for s in listed.get("items", []) if s["metadata"]["name"] in ENDPOINTS]

    def pods(self, endpoint: str) -> list[Any]:
        selector = f"serving.knative.dev/service={endpoint}"
        items: list[Any] = self._core.list_namespaced_pod(
            self.namespace, label_selector=selector
        ).items
        # Terminating pods no longer serve: they do not count as running.
        return [p for p in items if p.metadata.deletion_timestamp is None]

    def status(self) -> list[EndpointStatus]:
        found = []
        for service in sorted(self._services(), key=lambda s: s["metadata"]["name"]):
            name = service["metadata"]["name"]
            state = service.get("status", {})
            annotations = service["spec"]["template"].get("metadata", {}).get("annotations", {})
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in state.get("conditions", [])
            )
            found.append(
                EndpointStatus(
                    name=name,
                    url=state.get("url"),
                    ready=ready,
                    latest_revision=state.get("latestReadyRevisionName"),
                    pods=len(self.pods(name)),
                    min_scale=annotations.get("autoscaling.knative.dev/min-scale", "0"),
                    max_scale=annotations.get("autoscaling.knative.dev/max-scale", "0"),
                )
            )
        return found

    def coldstart(
        self, endpoint: str, *, path: str, token: str | None, idle_timeout: float
    ) -> ColdStart:
        url = next((s.url for s in self.status() if s.name == endpoint), None)
        if url is None:
            raise LookupError(f"no Knative Service {endpoint!r} with a URL in {self.namespace}")
        deadline = time.monotonic() + idle_timeout
        while self.pods(endpoint):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{endpoint} still has pods after {idle_timeout:.0f}s idle")
            time.sleep(2)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.perf_counter()
        response = httpx.get(url.rstrip("/") + path, headers=headers, timeout=120)
        elapsed = time.perf_counter() - started
        return ColdStart(endpoint, elapsed, response.status_code, self._pod_ready_seconds(endpoint))

    def _pod_ready_seconds(self, endpoint: str) -> float | None:
        for pod in self.pods(endpoint):
            for condition in pod.status.conditions or []:
                if condition.type == "Ready" and condition.status == "True":
                    created = pod.metadata.creation_timestamp
                    return float((condition.last_transition_time - created).total_seconds())
        return None


def format_status(rows: list[EndpointStatus]) -> str:
    header = ("ENDPOINT", "READY", "PODS", "MIN", "MAX", "REVISION", "URL")
    table = [header] + [
        (r.name, "yes" if r.ready else "no", str(r.pods), r.min_scale, r.max_scale,
         r.latest_revision or "-", r.url or "-")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in table)  # fmt: skip
