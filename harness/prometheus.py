"""Prometheus (Debian's `prometheus` package) on a free port, scraping the targets it is given,
with a client for its query API: the dashboard's PromQL evaluated on real data."""

from __future__ import annotations

import time
from typing import Any

import httpx
import yaml

from harness.processes import HOST, ServiceProcess, binary, free_port, new_workdir


class PrometheusServer:
    def __init__(self, targets: list[str], *, scrape_interval: str = "1s") -> None:
        self.port = free_port()
        self.dir = new_workdir("prometheus")
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [
                {"job_name": "otlp", "honor_labels": True, "static_configs": [{"targets": targets}]}
            ],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.base_url = f"http://{HOST}:{self.port}"
        self.process = ServiceProcess(
            [
                binary("prometheus"),
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address={HOST}:{self.port}",
                "--log.level=warn",
            ],
            env={},
        )
        self.process.wait_healthy(f"{self.base_url}/-/ready", timeout=60)
        self.http = httpx.Client(base_url=self.base_url, timeout=30)

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """The matrix `expr` evaluates to: [{"metric": {...}, "values": [[t, "v"], ...]}]."""
        response = self.http.get(
            "/api/v1/query_range",
            params={"query": expr, "start": start, "end": end, "step": step},
        )
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{expr}: {body}")
        return list(body["data"]["result"])

    def wait_for_series(self, expr: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.http.get("/api/v1/query", params={"query": expr}).json()
            if body.get("data", {}).get("result"):
                return
            time.sleep(0.5)
        raise TimeoutError(f"Prometheus has no {expr} after {timeout} s")

    def close(self) -> None:
        self.http.close()
        self.process.terminate()
