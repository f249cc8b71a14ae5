"""Warm path: one process serving cache hits under wrk at rising concurrency, beside the FastAPI
hello app in the same run; and the memory each process holds idle and under that load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.config import Profile
from bench.load import LoadResult, wrk
from bench.stack import Stack, first_200, rss_kib, spawn_hello


async def run(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    userapi = stack.userapi(stack.env())
    hello = spawn_hello()
    try:
        first_200(hello)
        servers = (userapi, hello)
        idle = {server.name: rss_kib(server.process.pid)["VmRSS"] for server in servers}
        for server in servers:  # JIT-free Python still warms: pools, caches, branch predictors
            await wrk(
                server.url, connections=10, seconds=1, headers=server.headers, workdir=workdir
            )
        before = userapi.cache_outcomes()
        runs: dict[str, list[LoadResult]] = {server.name: [] for server in servers}
        for connections in profile.warm_concurrency:
            for server in servers:
                runs[server.name].append(
                    await wrk(
                        server.url,
                        connections=connections,
                        seconds=profile.warm_seconds,
                        headers=server.headers,
                        workdir=workdir,
                    )
                )
        peak = {server.name: rss_kib(server.process.pid)["VmHWM"] for server in servers}
        after = userapi.cache_outcomes()
    finally:
        userapi.stop()
        hello.stop()
    measured = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    if set(measured) - {"hit"} and any(measured[k] for k in set(measured) - {"hit"}):
        raise RuntimeError(f"the warm path was not all cache hits: {measured}")
    return {
        "load_generator": "wrk, 1 thread, keep-alive connections",
        "seconds_per_run": profile.warm_seconds,
        "runs": {name: [r.as_dict() for r in results] for name, results in runs.items()},
        "ratios": _ratios(runs["userapi"], runs["fastapi-hello"]),
        "userapi_cache_outcomes": measured,
        "memory_mib": {
            name: {"idle": round(idle[name] / 1024, 1), "peak": round(peak[name] / 1024, 1)}
            for name in idle
        },
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
