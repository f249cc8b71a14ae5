"""Auth0 budget (issue 22): an over-budget storm of misses for distinct users across several
get-user processes sharing one Redis, with Auth0 (the emulator) at 150 ms and limited to the
Free plan's 2 requests/s, burst 2, and the shared budget set to the same.

What reached Auth0 (calls per second, 429s), what callers got, and how long the misses took.
Then the client quota's cost on the cached read: one process with a quota (never reached) and
one without, under wrk in alternating rounds. Not measured here: list-users behind the misses
(tests/integration/test_rate_budget.py measures the order).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from userapi.domain.users import user_path
from userapi.emulator.app import ROUTE_GET_USER

from bench.config import Profile
from bench.load import LoadResult, fire, median_of, percentiles, wrk
from bench.scenario import Result, Scenario, Verdict, ratio_at_least
from bench.stack import Stack

AUTH0_LATENCY_MS = 150.0
RATE, BURST = 2, 2


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max(
        (sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times)),
        default=0,
    )


async def _quota_cost(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    """Cached reads per second with a client quota on (never reached) against off."""
    quota = {"CLIENT_QUOTA_REQUESTS": str(10**9), "CLIENT_QUOTA_WINDOW_SECONDS": "60"}
    servers = {"off": stack.userapi(stack.env()), "on": stack.userapi(stack.env(overrides=quota))}
    rounds: dict[str, list[LoadResult]] = {name: [] for name in servers}
    try:
        for round_ in range(profile.warm_rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in order:
                server = servers[name]
                rounds[name].append(
                    await wrk(
                        server.url,
                        connections=50,
                        seconds=profile.warm_seconds,
                        headers=server.headers,
                        workdir=workdir,
                    )
                )
    finally:
        for server in servers.values():
            server.stop()
    medians = {name: median_of(results) for name, results in rounds.items()}
    return {
        "rps": {name: round(result.rps) for name, result in medians.items()},
        "errors": {name: result.errors for name, result in medians.items()},
        "ratio": round(medians["on"].rps / medians["off"].rps, 3),
    }


async def run(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    return {
        **await _storm(stack, profile),
        "quota_cost": await _quota_cost(stack, profile, workdir),
    }


async def _storm(stack: Stack, profile: Profile) -> dict[str, Any]:
    users = stack.create_users(profile.auth0_budget_misses, "auth0-budget")
    env = stack.env(
        overrides={
            "AUTH0_MANAGEMENT_RATE_PER_SECOND": str(RATE),
            "AUTH0_MANAGEMENT_BURST": str(BURST),
            "AUTH0_MANAGEMENT_EXPECTED_PODS": str(profile.auth0_budget_processes),
        }
    )
    servers = [stack.userapi(env) for _ in range(profile.auth0_budget_processes)]
    try:
        stack.emulator.latency(AUTH0_LATENCY_MS)
        stack.emulator.rate_limit(burst=BURST, per_second=float(RATE))
        stack.emulator.reset()  # counters and the bucket, after the warm-up reads
        requests = [
            (servers[index % len(servers)].base_url + user_path(user), servers[0].headers)
            for index, user in enumerate(users)
        ]
        outcomes = await fire(requests, concurrency=len(requests))
        calls = [c for c in stack.emulator.management_calls() if c[1] == ROUTE_GET_USER]
    finally:
        stack.emulator.latency(0)
        stack.emulator.rate_limit(burst=100_000, per_second=100_000.0)
        for server in servers:
            server.stop()
    arrivals = [at for at, _, _ in calls]
    span = max(arrivals) - min(arrivals) if len(arrivals) > 1 else 0.0
    return {
        "processes": len(servers),
        "misses": len(requests),
        "auth0_latency_ms": AUTH0_LATENCY_MS,
        "budget": {"per_second": RATE, "burst": BURST},
        "statuses": dict(Counter(str(o.status) for o in outcomes)),
        "auth0_calls": len(calls),
        "auth0_429s": sum(1 for _, _, status in calls if status == 429),
        "auth0_calls_per_second": round(len(calls) / span, 2) if span else None,
        "auth0_max_calls_in_1s": _max_in_window(arrivals),
        "latency_200": percentiles([o.ms for o in outcomes if o.status == 200]),
        "latency_503": percentiles([o.ms for o in outcomes if o.status == 503]),
    }


def judge(st: Result) -> list[Verdict]:
    limit = st["budget"]["per_second"] + st["budget"]["burst"]
    worst = st["auth0_max_calls_in_1s"]
    others = set(st["statuses"]) - {"200", "503"}
    return [
        Verdict(
            target="auth0-budget 429s",
            goal="0",
            measured=st["auth0_429s"],
            met=st["auth0_429s"] == 0,
        ),
        Verdict(
            target="auth0-budget calls in any 1 s",
            goal=f"<= {limit} (rate + burst)",
            measured=worst,
            met=worst <= limit,
        ),
        Verdict(
            target="auth0-budget caller statuses",
            goal="200 or 503 only",
            measured=st["statuses"],
            met=not others,
        ),
        ratio_at_least(
            "quota check on the cached read", 0.95, "quota off", st["quota_cost"]["ratio"]
        ),
    ]


def render(st: Result) -> list[str]:
    ok, refused = st["latency_200"], st["latency_503"]

    def p(stats: dict[str, float], key: str) -> str:
        return f"{stats[key]:.0f} ms" if key in stats else "n/a"

    return [
        "",
        f"**Auth0 budget**: {st['misses']} concurrent misses for distinct users over "
        f"{st['processes']} processes, Auth0 at {st['auth0_latency_ms']:g} ms and "
        f"{st['budget']['per_second']}/s (burst {st['budget']['burst']}), the shared budget the "
        f"same: {st['auth0_calls']} Auth0 calls ({st['auth0_calls_per_second']}/s, at most "
        f"{st['auth0_max_calls_in_1s']} in any 1 s), {st['auth0_429s']} x 429; statuses "
        f"{st['statuses']}; 200s p50 {p(ok, 'p50_ms')}, p99 {p(ok, 'p99_ms')}; 503s p50 "
        f"{p(refused, 'p50_ms')}, p99 {p(refused, 'p99_ms')}. Cached reads at 50 connections "
        f"with a client quota on: {st['quota_cost']['rps']['on']} req/s against "
        f"{st['quota_cost']['rps']['off']} off ({st['quota_cost']['ratio']:.2f} x).",
    ]


SCENARIO = Scenario("auth0-budget", run=run, render=render, judge=judge)
