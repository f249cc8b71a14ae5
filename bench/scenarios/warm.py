"""Warm path: one process serving cache hits under wrk at rising concurrency, beside the FastAPI
hello app in the same run; and the memory each process holds idle and under that load.

The reads spread over WARM_USERS users picked at random, all cached beforehand: one hot user
would let concurrent reads share their Redis round trips, flattering the figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.config import Profile
from bench.load import LoadResult, fire, wrk
from bench.stack import Server, Stack, cpu_seconds, first_200, rss_kib, spawn_hello
from tests.support import user_path

WARM_USERS = 200


async def run(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    users = stack.create_users(WARM_USERS, "warm")
    userapi = stack.userapi(stack.env())
    hello = spawn_hello()
    paths = {userapi.name: [user_path(user) for user in users], hello.name: []}
    try:
        first_200(hello)
        outcomes = await fire(
            [(userapi.base_url + path, userapi.headers) for path in paths[userapi.name]],
            concurrency=4,
        )
        if {o.status for o in outcomes} != {200}:
            raise RuntimeError("caching the warm path's users failed")
        servers = (userapi, hello)
        idle = {server.name: rss_kib(server.process.pid)["VmRSS"] for server in servers}
        for server in servers:  # JIT-free Python still warms: pools, caches, branch predictors
            await wrk(
                server.url,
                connections=10,
                seconds=1,
                headers=server.headers,
                paths=paths[server.name],
                workdir=workdir,
            )
        before = userapi.cache_outcomes()
        runs: dict[str, list[LoadResult]] = {server.name: [] for server in servers}
        cpu: dict[str, list[dict[str, float]]] = {server.name: [] for server in servers}
        calls: list[dict[str, float]] = []
        for connections in profile.warm_concurrency:
            for server in servers:
                before_cpu = _cpu(stack, server)
                before_calls = _backing_calls(stack)
                result = await wrk(
                    server.url,
                    connections=connections,
                    seconds=profile.warm_seconds,
                    headers=server.headers,
                    paths=paths[server.name],
                    workdir=workdir,
                )
                after_cpu = _cpu(stack, server)
                if server is userapi and result.requests:
                    after_calls = _backing_calls(stack)
                    calls.append(
                        {
                            name: round(
                                (after_calls[name] - before_calls[name]) / result.requests, 3
                            )
                            for name in after_calls
                        }
                    )
                runs[server.name].append(result)
                cpu[server.name].append(
                    {
                        name: round((after_cpu[name] - before_cpu[name]) / result.requests * 1e6)
                        for name in after_cpu
                    }
                    if result.requests
                    else {}
                )
        peak = {server.name: rss_kib(server.process.pid)["VmHWM"] for server in servers}
        after = userapi.cache_outcomes()
    finally:
        userapi.stop()
        hello.stop()
    measured = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {
        "load_generator": "wrk, 1 thread, keep-alive connections",
        "users": WARM_USERS,
        "seconds_per_run": profile.warm_seconds,
        "runs": {name: [r.as_dict() for r in results] for name, results in runs.items()},
        "ratios": _ratios(runs["userapi"], runs["fastapi-hello"]),
        # Where the machine's two cores went: CPU microseconds per request, by process.
        "cpu_us_per_request": cpu,
        # Counted by Redis and PgBouncer: how many reads the batching (runtime/batch.py) made
        # of one per request, per warm run.
        "userapi_backing_calls_per_request": calls,
        # Expected: all hits. A process stall longer than REDIS_TIMEOUT_SECONDS turns the next
        # REDIS_RETRY_AFTER_ERROR_SECONDS of reads into misses; shown, not hidden.
        "userapi_cache_outcomes": measured,
        "memory_mib": {
            name: {"idle": round(idle[name] / 1024, 1), "peak": round(peak[name] / 1024, 1)}
            for name in idle
        },
    }


def _cpu(stack: Stack, server: Server) -> dict[str, float]:
    own = {"server": cpu_seconds(server.process.pid)}
    return own if server.name != "userapi" else {**own, **stack.backing_cpu_seconds()}


def _backing_calls(stack: Stack) -> dict[str, float]:
    with stack.redis_client() as client:
        commands = client.info("commandstats")
    queries = sum(
        int(row["total_query_count"])
        for row in stack.bouncer.show("STATS")
        if row["database"] == stack.database
    )
    return {
        "redis_reads": sum(
            commands.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("get", "mget")
        ),
        "database_queries": queries,
    }


def _ratios(userapi: list[LoadResult], hello: list[LoadResult]) -> list[dict[str, Any]]:
    return [
        {
            "connections": ours.connections,
            "rps_ratio": round(ours.rps / theirs.rps, 3) if theirs.rps else None,
            "p99_ratio": round(ours.p99_ms / theirs.p99_ms, 3) if theirs.p99_ms else None,
        }
        for ours, theirs in zip(userapi, hello, strict=True)
    ]
