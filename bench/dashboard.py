"""The Grafana dashboard (helm/userapi/dashboards/userapi.json) drawn from real data, for
docs/observability.md:

    python -m bench.dashboard [--seconds 150] [--output docs/observability-dashboard.png]

Real get-user, list-users and create-user processes (Redis, PostgreSQL behind PgBouncer, the
Auth0 emulator answering in 150 ms) export OTLP to harness/otlp.py, which serves what it
received in Prometheus' text format; Debian's Prometheus scrapes it every second; each panel's
own PromQL is then evaluated by Prometheus over the run, and drawn with matplotlib. The load
mixes cached and uncached reads, 401s, searches, creates, a burst of Auth0 429s, two restarts
of get-user (cold starts) and a second of Redis not answering. Grafana's `$__rate_interval`
becomes 30s and the panels' 1h windows the run's length: the run is minutes, not hours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import secrets
import sys
import time
from pathlib import Path

from userapi.domain.users import user_path

from bench.load import fire
from bench.stack import ROOT, Stack
from harness.otlp import OTLPReceiver
from harness.processes import install_signal_cleanup
from harness.prometheus import PrometheusServer
from harness.userapi import Service, start_service

DASHBOARD = ROOT / "helm" / "userapi" / "dashboards" / "userapi.json"
ADMIN = "auth0|dashboardadmin00000000000"


def _telemetry_env(receiver: OTLPReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "1000",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    }


async def _load(
    stack: Stack, services: dict[str, Service], env: dict[str, str], seconds: float
) -> None:
    cached = stack.create_users(40, "dashboard")
    admin = {"Authorization": f"Bearer {stack.emulator.token(ADMIN, ['create:users'])}"}
    started = time.monotonic()
    restarts = {seconds * 0.35, seconds * 0.7}
    rate_limited_at = seconds * 0.5
    redis_paused_at = seconds * 0.6  # a second of Redis not answering: its errors, and misses
    tick = 0
    while (elapsed := time.monotonic() - started) < seconds:
        tick += 1
        get = services["get-user"]
        requests = [
            (get.base_url + user_path(random.choice(cached)), stack.auth) for _ in range(20)
        ]
        if tick % 2 == 0:
            (new,) = stack.create_users(1, f"dashboard-{tick}")
            requests.append((get.base_url + user_path(new), stack.auth))
            requests.append((services["list-users"].base_url + "/users?per_page=5", stack.auth))
        if tick % 3 == 0:
            requests.append((get.base_url + user_path(cached[0]), {}))  # a 401
        await fire(requests, concurrency=8)
        if tick % 5 == 0:
            services["create-user"].http.post(
                "/users",
                json={
                    "email": f"dash-{secrets.token_hex(4)}@example.com",
                    "password": "Str0ng-passw0rd!",
                    "name": "Dash Board",
                },
                headers={**admin, "Idempotency-Key": secrets.token_hex(8)},
            )
        if elapsed >= rate_limited_at:
            rate_limited_at = float("inf")
            stack.emulator.fault("GET /api/v2/users/{id}", kind="status", status=429, times=4)
        if elapsed >= redis_paused_at:
            redis_paused_at = float("inf")
            stack.redis.pause(1.0)
        for moment in sorted(restarts):
            if elapsed >= moment:
                restarts.discard(moment)
                get.close()  # SIGTERM: the last metrics go out, then a new process, cold
                services["get-user"] = start_service("get-user", env)
        await asyncio.sleep(max(0.0, tick - (time.monotonic() - started)))


def _legend(template: str, metric: dict[str, str]) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda m: metric.get(m.group(1), ""), template).strip()


def draw(prometheus: PrometheusServer, start: float, end: float, output: Path) -> dict[str, int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    window = f"{max(60, int(end - start))}s"
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(18, 4.2 * rows), squeeze=False)
    series_per_panel: dict[str, int] = {}
    for axis, panel in zip(axes.flat, panels, strict=False):
        count = 0
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "30s").replace("[1h]", f"[{window}]")
            for series in prometheus.query_range(expr, start, end, 5):
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                axis.plot(times, values, label=_legend(target["legendFormat"], series["metric"]))
                count += 1
        series_per_panel[panel["title"]] = count
        axis.set_title(panel["title"], fontsize=10)
        axis.set_xlabel("seconds into the run", fontsize=8)
        axis.set_ylabel(panel["fieldConfig"]["defaults"]["unit"], fontsize=8)
        axis.tick_params(labelsize=7)
        if count:
            axis.legend(fontsize=6, loc="upper left")
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.suptitle(
        "userapi dashboard: its PromQL on a real run (Prometheus scraping real processes' OTLP)",
        fontsize=12,
    )
    figure.tight_layout()
    figure.savefig(output, dpi=70)
    plt.close(figure)
    return series_per_panel


async def run(seconds: float, output: Path) -> dict[str, int]:
    stack = Stack()
    receiver = OTLPReceiver()
    receiver.start()
    prometheus = PrometheusServer([f"{receiver.endpoint.split('://')[1]}"])
    services: dict[str, Service] = {}
    try:
        stack.emulator.latency(150)
        env = {**stack.env(), **_telemetry_env(receiver)}
        for endpoint in ("get-user", "list-users", "create-user"):
            services[endpoint] = start_service(endpoint, env)
        start = time.time()
        await _load(stack, services, env, seconds)
        for service in services.values():
            service.close()
        services.clear()
        await asyncio.sleep(3)  # the final exports in, and scraped
        return draw(prometheus, start, time.time(), output)
    finally:
        for service in services.values():
            service.close()
        prometheus.close()
        receiver.stop()
        stack.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument(
        "--output", type=Path, default=ROOT / "docs" / "observability-dashboard.png"
    )
    args = parser.parse_args(argv)
    install_signal_cleanup()
    drawn = asyncio.run(run(args.seconds, args.output))
    print(json.dumps(drawn, indent=2))
    empty = [title for title, count in drawn.items() if not count]
    if empty:
        print(f"panels without data: {empty}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
