"""Stampede: a burst of first reads of one uncached user spread over several processes, all
sharing one Redis. Counts what reached Auth0."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from userapi.domain.users import user_path
from userapi.emulator.app import ROUTE_GET_USER, ROUTE_OAUTH

from bench.config import Profile
from bench.load import fire, percentiles
from bench.scenario import Result, Scenario, Verdict
from bench.stack import Stack

AUTH0_LATENCY_MS = 150.0


async def run(stack: Stack, profile: Profile, _workdir: Path) -> dict[str, Any]:
    (target,) = stack.create_users(1, "stampede")
    env = stack.env()
    servers = [stack.userapi(env) for _ in range(profile.stampede_processes)]
    try:
        before = [server.cache_outcomes() for server in servers]
        warned_before = sum(len(server.warnings()) for server in servers)
        stack.emulator.latency(AUTH0_LATENCY_MS)
        stats_before = stack.emulator.stats()
        requests = [
            (servers[index % len(servers)].base_url + user_path(target), servers[0].headers)
            for index in range(profile.stampede_requests)
        ]
        outcomes = await fire(requests, concurrency=len(requests))
        stats_after = stack.emulator.stats()
        warnings = [w for server in servers for w in server.warnings()][warned_before:]
        outcomes_by_cache: Counter[str] = Counter()
        for index, (server, earlier) in enumerate(zip(servers, before, strict=True)):
            sent = len(range(index, len(requests), len(servers)))
            logged = server.cache_outcomes(at_least=sum(earlier.values()) + sent)
            for kind, count in logged.items():
                outcomes_by_cache[kind] += count - earlier.get(kind, 0)
    finally:
        stack.emulator.latency(0)
        for server in servers:
            server.stop()
    return {
        "processes": len(servers),
        "requests": len(requests),
        "auth0_latency_ms": AUTH0_LATENCY_MS,
        "statuses": dict(Counter(str(o.status) for o in outcomes)),
        "auth0_user_fetches": stats_after.get(ROUTE_GET_USER, 0)
        - stats_before.get(ROUTE_GET_USER, 0),
        "auth0_token_fetches": stats_after.get(ROUTE_OAUTH, 0) - stats_before.get(ROUTE_OAUTH, 0),
        "cache_outcomes": dict(outcomes_by_cache),
        "latency": percentiles([o.ms for o in outcomes]),
        "warnings": warnings[:5],
    }


def judge(st: Result) -> list[Verdict]:
    fetches = st["auth0_user_fetches"]
    return [Verdict(target="stampede", goal="<= 1 Auth0 fetch", measured=fetches, met=fetches <= 1)]


def render(st: Result) -> list[str]:
    return [
        "",
        f"**Stampede**: {st['requests']} concurrent first reads of one user over "
        f"{st['processes']} processes, Auth0 at {st['auth0_latency_ms']:g} ms: "
        f"{st['auth0_user_fetches']} Auth0 user fetch(es), {st['auth0_token_fetches']} token "
        f"fetch(es); statuses {st['statuses']}; cache outcomes {st['cache_outcomes']}; "
        f"p50 {st['latency']['p50_ms']:.0f} ms, p99 {st['latency']['p99_ms']:.0f} ms.",
    ]


SCENARIO = Scenario("stampede", run=run, render=render, judge=judge)
