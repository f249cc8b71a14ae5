"""Telemetry's cost: get-user with telemetry off, on with every trace sampled, and on with one
new trace in ten, in the same run, exporting over OTLP/HTTP to a real receiver
(harness/otlp.py, decoding every export as a collector would, in this process).

Warm: cache hits under wrk, the three servers alternating in each round; reported as the median
of each round's paired ratio to the off server. Cold: exec to the first 200 (a cache hit, as in
the coldstart scenario), the three interleaved; the median of each.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from userapi.domain.users import user_path

from bench.config import Profile
from bench.load import LoadResult, fire, median_of, paired_ratios, wrk
from bench.scenario import Result, Scenario, Verdict, ratio_at_least, ratio_at_most
from bench.stack import Server, Stack, cpu_seconds, first_200
from harness.otlp import OTLPReceiver

USERS = 200


def _variants(receiver: OTLPReceiver) -> dict[str, dict[str, str]]:
    on = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        # The chart's defaults: spans every 2 s, metrics every 30 s.
        "OTEL_BSP_SCHEDULE_DELAY": "2000",
        "OTEL_METRIC_EXPORT_INTERVAL": "30000",
    }
    return {
        "off": {},
        "on": {**on, "OTEL_TRACES_SAMPLER_ARG": "1.0"},
        "on-10%": {**on, "OTEL_TRACES_SAMPLER_ARG": "0.1"},
    }


async def run(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    with OTLPReceiver() as receiver:
        variants = _variants(receiver)
        cold = _cold(stack, profile, variants)
        warm = await _warm(stack, profile, workdir, variants)
        received = receiver.requests
        spans = len(receiver.spans())
    return {
        "receiver": "harness/otlp.py in the bench process (decodes every export)",
        "cold": cold,
        "warm": warm,
        "exports_received": received,
        "spans_received": spans,
        "receiver_errors": receiver.errors,
    }


def _cold(stack: Stack, profile: Profile, variants: dict[str, dict[str, str]]) -> dict[str, Any]:
    env = stack.env()
    stack.userapi(env).stop()  # Redis holds the profile and the token, as after another pod

    def spawner(extra: dict[str, str]) -> Callable[[], Server]:
        return lambda: stack.spawn_userapi(env, **extra)

    spawners = [(name, spawner(extra)) for name, extra in variants.items()]
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for attempt in range(profile.cold_runs):
        shift = attempt % len(spawners)
        for name, spawn in spawners[shift:] + spawners[:shift]:
            server = spawn()
            try:
                samples[name].append(first_200(server) * 1000)
            finally:
                server.stop()
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "runs": profile.cold_runs,
        "median_ms": {name: round(value, 1) for name, value in medians.items()},
        "samples_ms": {name: [round(v, 1) for v in values] for name, values in samples.items()},
        "ratio_to_off": {name: round(value / medians["off"], 3) for name, value in medians.items()},
    }


async def _warm(
    stack: Stack, profile: Profile, workdir: Path, variants: dict[str, dict[str, str]]
) -> dict[str, Any]:
    users = stack.create_users(USERS, "telemetry")
    paths = [user_path(user) for user in users]
    env = stack.env()
    servers: dict[str, Server] = {}
    try:
        for name, extra in variants.items():
            server = stack.spawn_userapi(env, **extra)
            server.name = name
            first_200(server)
            servers[name] = server
        outcomes = await fire(
            [(servers["off"].base_url + path, servers["off"].headers) for path in paths],
            concurrency=4,
        )
        if {o.status for o in outcomes} != {200}:
            raise RuntimeError("caching the telemetry scenario's users failed")
        order = list(servers.values())
        for server in order:  # pools, caches and sockets warm, as in the warm scenario
            await wrk(
                server.url,
                connections=max(profile.warm_concurrency),
                seconds=min(2, profile.warm_seconds),
                headers=server.headers,
                paths=paths,
                workdir=workdir,
            )
        levels = []
        for connections in sorted({min(profile.warm_concurrency), 50}):
            rounds: dict[str, list[LoadResult]] = {name: [] for name in servers}
            cpu: dict[str, float] = {name: 0.0 for name in servers}
            for round_ in range(profile.warm_rounds):
                shift = round_ % len(order)
                for server in order[shift:] + order[:shift]:
                    before = cpu_seconds(server.process.pid)
                    result = await wrk(
                        server.url,
                        connections=connections,
                        seconds=profile.warm_seconds,
                        headers=server.headers,
                        paths=paths,
                        workdir=workdir,
                    )
                    cpu[server.name] += cpu_seconds(server.process.pid) - before
                    rounds[server.name].append(result)
            levels.append(_level(connections, rounds, cpu))
    finally:
        for server in servers.values():
            server.stop()
    return {"users": USERS, "seconds_per_run": profile.warm_seconds, "levels": levels}


def _level(
    connections: int, rounds: dict[str, list[LoadResult]], cpu: dict[str, float]
) -> dict[str, Any]:
    return {
        "connections": connections,
        "runs": {name: median_of(results).as_dict() for name, results in rounds.items()},
        "ratio_to_off": {
            name: paired_ratios(results, rounds["off"]) for name, results in rounds.items()
        },
        "cpu_us_per_request": {
            name: round(cpu[name] / sum(r.requests for r in results) * 1e6)
            for name, results in rounds.items()
            if sum(r.requests for r in results)
        },
    }


def judge(otel: Result) -> list[Verdict]:
    verdicts: list[Verdict] = []
    at_50 = next((lv for lv in otel["warm"]["levels"] if lv["connections"] == 50), None)
    if at_50:
        ratios = at_50["ratio_to_off"]
        verdicts += [
            ratio_at_least(
                "telemetry on: warm throughput at 50",
                0.9,
                "telemetry off",
                ratios["on"]["rps_ratio"],
            ),
            ratio_at_least(
                "telemetry on, 1 in 10 sampled: warm throughput at 50",
                0.97,
                "telemetry off",
                ratios["on-10%"]["rps_ratio"],
            ),
        ]
    cold_ratio = otel["cold"]["ratio_to_off"]["on"]
    return [
        *verdicts,
        ratio_at_most("telemetry on: cold start", 1.15, "telemetry off", cold_ratio),
    ]


def render(otel: Result) -> list[str]:
    cold = otel["cold"]
    out = [
        "",
        "**Telemetry** (docs/observability.md): get-user off, on with every trace sampled, and "
        "on sampling one new trace in ten, exporting over OTLP/HTTP to a receiver in the bench "
        f"process ({otel['spans_received']} spans received). Cold start, median of "
        f"{cold['runs']}: "
        + ", ".join(
            f"{name} {ms:.0f} ms ({cold['ratio_to_off'][name]:.2f} x)"
            for name, ms in cold["median_ms"].items()
        )
        + ".",
        "",
        "| Connections | Variant | req/s | p99 ms | x off (req/s) | x off (p99) | CPU µs/request |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in otel["warm"]["levels"]:
        for name, run in level["runs"].items():
            ratio = level["ratio_to_off"][name]
            out.append(
                f"| {level['connections']} | {name} | {run['rps']:.0f} | {run['p99_ms']:.1f} | "
                f"{ratio['rps_ratio']:.2f} | {ratio['p99_ratio']:.2f} | "
                f"{level['cpu_us_per_request'].get(name, '-')} |"
            )
    return out


SCENARIO = Scenario("telemetry", run=run, render=render, judge=judge)
