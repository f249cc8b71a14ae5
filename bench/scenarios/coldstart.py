"""Cold start: exec until the first 200, for userapi get-user and two yardsticks, interleaved.

userapi's first request is the real one: token verified, profile from Redis (a cache hit, which
is checked), account read through PgBouncer. Redis already holds what another pod put there (the
profile and the management token), as it does when Knative scales a service up from zero.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.config import Profile
from bench.scenario import Result, Scenario, Verdict, ratio_at_most
from bench.stack import Server, Stack, first_200, rss_kib, spawn_func_hello, spawn_hello

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


async def run(stack: Stack, profile: Profile, _workdir: Path) -> dict[str, Any]:
    env = stack.env()
    stack.userapi(env).stop()  # fills Redis as an earlier pod would have
    spawners: list[Callable[[], Server]] = [
        lambda: stack.spawn_userapi(env),
        spawn_hello,
        spawn_func_hello,
    ]
    samples: dict[str, list[float]] = defaultdict(list)
    idle_kib: dict[str, int] = {}
    auth0_before = stack.emulator.stats()
    for attempt in range(profile.cold_runs):
        # Rotate the order so that no server always runs right after another one's exit.
        shift = attempt % len(spawners)
        for spawn in spawners[shift:] + spawners[:shift]:
            server = spawn()
            try:
                samples[server.name].append(first_200(server) * 1000)
                idle_kib.setdefault(server.name, rss_kib(server.process.pid)["VmRSS"])
                outcomes = server.cache_outcomes(1) if server.name == "userapi" else {}
                if server.name == "userapi" and outcomes.get("hit") != 1:
                    raise RuntimeError(
                        f"userapi's first read was not a cache hit ({outcomes}): {server.url}"
                    )
            finally:
                server.stop()
    auth0_after = stack.emulator.stats()
    summary = {name: summarize(values) for name, values in samples.items()}
    hello = summary["fastapi-hello"]["median_ms"]
    return {
        "runs": profile.cold_runs,
        "servers": summary,
        "ratio_to_fastapi_hello": {
            name: round(values["median_ms"] / hello, 3) for name, values in summary.items()
        },
        # What the cold userapi processes asked Auth0 for (JWKS, token, profile): ideally nothing.
        "auth0_calls": {
            route: count - auth0_before.get(route, 0)
            for route, count in auth0_after.items()
            if count != auth0_before.get(route, 0)
        },
        "idle_rss_mib": {name: round(kib / 1024, 1) for name, kib in idle_kib.items()},
        "imports": _import_costs(stack, env),
    }


def _by_package(stderr: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            totals[match.group(4).split(".")[0]] += int(match.group(1)) / 1000
    return dict(totals)


def summarize(values_ms: list[float]) -> dict[str, Any]:
    return {
        "median_ms": round(statistics.median(values_ms), 1),
        "min_ms": round(min(values_ms), 1),
        "max_ms": round(max(values_ms), 1),
        "samples_ms": [round(v, 1) for v in values_ms],
    }


def _import_costs(stack: Stack, env: dict[str, str]) -> dict[str, Any]:
    """`python -X importtime` of one cold start of each, summed by top-level package: where the
    import part of the cold start goes, and what userapi adds on top of the FastAPI app."""
    by_server = {}
    for server in (
        stack.spawn_userapi(env, PYTHONPROFILEIMPORTTIME="1"),
        spawn_hello(PYTHONPROFILEIMPORTTIME="1"),
    ):
        try:
            first_200(server)
        finally:
            server.stop()
        by_server[server.name] = _by_package(server.process.log_text())
    userapi, hello = by_server["userapi"], by_server["fastapi-hello"]
    top = sorted(userapi.items(), key=lambda item: item[1], reverse=True)[:15]
    return {
        "method": "python -X importtime, self time summed per top-level package, one run",
        "userapi_total_ms": round(sum(userapi.values()), 1),
        "fastapi_hello_total_ms": round(sum(hello.values()), 1),
        "userapi_top_ms": {name: round(ms, 1) for name, ms in top},
        "added_over_hello_ms": {
            name: round(ms - hello.get(name, 0.0), 1)
            for name, ms in top
            if ms - hello.get(name, 0.0) >= 1.0
        },
    }


def judge(cold: Result) -> list[Verdict]:
    ratio = cold["ratio_to_fastapi_hello"]["userapi"]
    return [ratio_at_most("cold start", 1.0, "FastAPI hello", ratio)]


def render(cold: Result) -> list[str]:
    out = [
        "",
        f"**Cold start**, exec to first 200, {cold['runs']} runs each, interleaved:",
        "",
        "| Server | Median | Min | Max | x FastAPI hello | Idle RSS |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in cold["servers"].items():
        out.append(
            f"| {name} | {row['median_ms']:.0f} ms | {row['min_ms']:.0f} ms | "
            f"{row['max_ms']:.0f} ms | {cold['ratio_to_fastapi_hello'][name]:.2f} | "
            f"{cold['idle_rss_mib'][name]:.0f} MiB |"
        )
    calls = ", ".join(f"{route}: {n}" for route, n in cold["auth0_calls"].items()) or "none"
    out += ["", f"Auth0 calls made by the {cold['runs']} cold userapi processes: {calls}."]
    imports = cold["imports"]
    top = ", ".join(f"{name} {ms:.0f}" for name, ms in list(imports["userapi_top_ms"].items())[:10])
    added = ", ".join(f"{name} {ms:.0f}" for name, ms in imports["added_over_hello_ms"].items())
    out += [
        "",
        f"Imports (`-X importtime`, one run): userapi {imports['userapi_total_ms']:.0f} ms, "
        f"FastAPI hello {imports['fastapi_hello_total_ms']:.0f} ms. Top packages (ms): {top}. "
        f"Added over the hello app (ms): {added}.",
    ]
    return out


def plot(cold: Result, axes: Axes) -> None:
    servers = cold["servers"]
    names = list(servers)
    medians = [servers[n]["median_ms"] for n in names]
    low = [servers[n]["median_ms"] - servers[n]["min_ms"] for n in names]
    high = [servers[n]["max_ms"] - servers[n]["median_ms"] for n in names]
    axes.bar(names, medians, yerr=[low, high], capsize=4, color=["C0", "C1", "C2"])
    axes.set_title("Cold start: exec to first 200 (median, min-max)")
    axes.set_ylabel("ms")


SCENARIO = Scenario("coldstart", run=run, render=render, judge=judge, plot=plot)
