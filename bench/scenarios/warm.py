"""Warm path: one process serving cache hits under wrk at rising concurrency, beside the FastAPI
hello app in the same run; and the memory each process holds idle and under that load.

The reads spread over WARM_USERS users picked at random, all cached beforehand: one hot user
would let concurrent reads share their Redis round trips, flattering the figure.

Each concurrency runs `warm_rounds` times per server, the two servers alternating which goes
first, and is reported as the median round: on a shared machine one stall (of the host, or of a
backing service on the server's cores) moves one run's p99 several-fold, for either server. The
ratios are medians of each round's paired ratio; every round is kept in the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from userapi.domain.users import user_path

from bench.config import Profile
from bench.load import LoadResult, fire, median_of, paired_ratios, wrk
from bench.scenario import Result, Scenario, Verdict, ratio_at_least, ratio_at_most
from bench.stack import Server, Stack, cpu_seconds, first_200, rss_kib, spawn_hello

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WARM_USERS = 200


async def run(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    users = stack.create_users(WARM_USERS, "warm")
    userapi = stack.userapi(stack.env())
    hello = spawn_hello()
    paths = {userapi.name: [user_path(user) for user in users], hello.name: []}
    servers = (userapi, hello)
    rounds: dict[str, list[list[LoadResult]]] = {server.name: [] for server in servers}
    cpu: dict[str, list[dict[str, float]]] = {server.name: [] for server in servers}
    calls: list[dict[str, float]] = []
    try:
        first_200(hello)
        outcomes = await fire(
            [(userapi.base_url + path, userapi.headers) for path in paths[userapi.name]],
            concurrency=4,
        )
        if {o.status for o in outcomes} != {200}:
            raise RuntimeError("caching the warm path's users failed")
        idle = {server.name: rss_kib(server.process.pid)["VmRSS"] for server in servers}
        # Warm means steady state: the database pool grown to its size under the highest
        # concurrency measured (growing it is a one-off a pod pays once), caches and sockets
        # warm. The cold start scenario measures the rest.
        for server in servers:
            await wrk(
                server.url,
                connections=max(profile.warm_concurrency),
                seconds=min(2, profile.warm_seconds),
                headers=server.headers,
                paths=paths[server.name],
                workdir=workdir,
            )
        before = userapi.cache_outcomes()
        for connections in profile.warm_concurrency:
            level = {server.name: _Level() for server in servers}
            for round_ in range(profile.warm_rounds):
                for server in servers if round_ % 2 == 0 else servers[::-1]:
                    await level[server.name].measure(
                        stack, server, connections, profile.warm_seconds, paths, workdir
                    )
            for name, measured in level.items():
                rounds[name].append(measured.results)
                cpu[name].append(measured.cpu_us_per_request())
            calls.append(level[userapi.name].calls_per_request())
        peak = {server.name: rss_kib(server.process.pid)["VmHWM"] for server in servers}
        after = userapi.cache_outcomes()
    finally:
        userapi.stop()
        hello.stop()
    measured_outcomes = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {
        "load_generator": "wrk, 1 thread, keep-alive connections",
        "users": WARM_USERS,
        "seconds_per_run": profile.warm_seconds,
        "rounds_per_run": profile.warm_rounds,
        # One row per concurrency: the median round (see the module docstring).
        "runs": {
            name: [median_of(results).as_dict() for results in levels]
            for name, levels in rounds.items()
        },
        "rounds": {
            name: [[r.as_dict() for r in results] for results in levels]
            for name, levels in rounds.items()
        },
        "ratios": [
            {"connections": ours[0].connections, **paired_ratios(ours, theirs)}
            for ours, theirs in zip(rounds[userapi.name], rounds[hello.name], strict=True)
        ],
        # Where the machine's two cores went: CPU microseconds per request, by process.
        "cpu_us_per_request": cpu,
        # Counted by Redis and PgBouncer: how many reads the batching (platform/batch.py) made
        # of one per request, per concurrency.
        "userapi_backing_calls_per_request": calls,
        # Expected: all hits. A process stall longer than REDIS_TIMEOUT_SECONDS turns the next
        # REDIS_RETRY_AFTER_ERROR_SECONDS of reads into misses; shown, not hidden.
        "userapi_cache_outcomes": measured_outcomes,
        "memory_mib": {
            name: {"idle": round(idle[name] / 1024, 1), "peak": round(peak[name] / 1024, 1)}
            for name in idle
        },
    }


class _Level:
    """One server's rounds at one concurrency, with the CPU and backing reads they took."""

    def __init__(self) -> None:
        self.results: list[LoadResult] = []
        self.cpu_seconds: dict[str, float] = {}
        self.calls: dict[str, float] = {}

    async def measure(
        self,
        stack: Stack,
        server: Server,
        connections: int,
        seconds: float,
        paths: dict[str, list[str]],
        workdir: Path,
    ) -> None:
        before_cpu, before_calls = _cpu(stack, server), _backing_calls(stack, server)
        result = await wrk(
            server.url,
            connections=connections,
            seconds=seconds,
            headers=server.headers,
            paths=paths[server.name],
            workdir=workdir,
        )
        after_cpu, after_calls = _cpu(stack, server), _backing_calls(stack, server)
        self.results.append(result)
        for name, value in after_cpu.items():
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0) + value - before_cpu[name]
        for name, value in after_calls.items():
            self.calls[name] = self.calls.get(name, 0) + value - before_calls[name]

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.results)

    def cpu_us_per_request(self) -> dict[str, float]:
        if not self.requests:
            return {}
        return {name: round(s / self.requests * 1e6) for name, s in self.cpu_seconds.items()}

    def calls_per_request(self) -> dict[str, float]:
        if not self.requests:
            return {}
        return {name: round(n / self.requests, 3) for name, n in self.calls.items()}


def _cpu(stack: Stack, server: Server) -> dict[str, float]:
    own = {"server": cpu_seconds(server.process.pid)}
    return own if server.name != "userapi" else {**own, **stack.backing_cpu_seconds()}


def _backing_calls(stack: Stack, server: Server) -> dict[str, float]:
    if server.name != "userapi":
        return {}
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


def judge(warm: Result) -> list[Verdict]:
    """Issue 23's targets: a cached read at least as fast as the hello app's answer."""
    verdicts: list[Verdict] = []
    at_1 = next((r for r in warm["ratios"] if r["connections"] == 1), None)
    at_50 = next((r for r in warm["ratios"] if r["connections"] == 50), None)
    if at_50:
        verdicts.append(
            ratio_at_least("warm throughput at 50", 1.0, "FastAPI hello", at_50["rps_ratio"])
        )
    if at_1 and at_1.get("p50_ratio") is not None:
        verdicts.append(ratio_at_most("warm p50 at 1", 1.5, "FastAPI hello", at_1["p50_ratio"]))
    if at_50:
        verdicts.append(ratio_at_most("warm p99 at 50", 1.5, "FastAPI hello", at_50["p99_ratio"]))
    errors = sum(run["errors"] for run in warm["runs"]["userapi"])
    return [*verdicts, Verdict(target="warm errors", goal="0", measured=errors, met=errors == 0)]


def render(warm: Result) -> list[str]:
    out = [
        "",
        f"**Warm path**, `GET /users/{{id}}` cache hits over {warm['users']} users, wrk "
        f"{warm['seconds_per_run']:g} s per run, {warm['rounds_per_run']} rounds per server "
        "and concurrency, alternating; medians, with each round's ratio in brackets "
        "(userapi | FastAPI hello):",
        "",
        "| Connections | userapi req/s | p50 | p99 | errors | hello req/s | p50 | p99 | errors "
        "| req/s x | p50 x | p99 x |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ours, theirs, ratio in zip(
        warm["runs"]["userapi"], warm["runs"]["fastapi-hello"], warm["ratios"], strict=True
    ):
        out.append(
            f"| {ours['connections']} | {ours['rps']:.0f} | {ours['p50_ms']:.2f} ms | "
            f"{ours['p99_ms']:.2f} ms | {ours['errors']} | {theirs['rps']:.0f} | "
            f"{theirs['p50_ms']:.2f} ms | {theirs['p99_ms']:.2f} ms | {theirs['errors']} | "
            f"{ratio['rps_ratio']:.2f} {_rounds(ratio['rps_ratio_rounds'])} | "
            f"{ratio.get('p50_ratio') or 0:.2f} {_rounds(ratio.get('p50_ratio_rounds', []))} | "
            f"{ratio['p99_ratio']:.2f} {_rounds(ratio['p99_ratio_rounds'])} |"
        )
    outcomes = ", ".join(f"{k} {v}" for k, v in warm["userapi_cache_outcomes"].items())
    out += ["", f"userapi's cache outcomes over these runs: {outcomes}."]
    batching = "; ".join(
        f"{run['connections']} connections: {calls['redis_reads']:.2f} Redis reads and "
        f"{calls['database_queries']:.2f} database queries"
        for run, calls in zip(
            warm["runs"]["userapi"], warm["userapi_backing_calls_per_request"], strict=True
        )
    )
    out += [
        "",
        "Reads per request, as Redis (GET and MGET calls) and PgBouncer (queries) counted them; "
        "below 1, reads were answered from the process's own copy or shared a batched read: "
        f"{batching}.",
    ]
    cpu = warm["cpu_us_per_request"]
    out += [
        "",
        "CPU per request (µs, from /proc, by process): "
        + "; ".join(
            f"{run['connections']} connections: userapi "
            + ", ".join(f"{name} {us:.0f}" for name, us in ours.items())
            + f" | hello {theirs.get('server', 0):.0f}"
            for run, ours, theirs in zip(
                warm["runs"]["userapi"], cpu["userapi"], cpu["fastapi-hello"], strict=True
            )
        )
        + ".",
    ]
    memory = ", ".join(
        f"{name} {m['idle']:.0f} MiB idle, {m['peak']:.0f} MiB peak"
        for name, m in warm["memory_mib"].items()
    )
    out += ["", f"**Memory** (RSS; peak is VmHWM after the warm runs): {memory}."]
    return out


def _rounds(ratios: list[float]) -> str:
    return "(" + ", ".join(f"{r:.2f}" for r in ratios) + ")" if len(ratios) > 1 else ""


def plot(warm: Result, axes: Axes) -> None:
    for name, runs in warm["runs"].items():
        x = [r["connections"] for r in runs]
        axes.plot(x, [r["rps"] for r in runs], marker="o", label=f"{name} req/s")
    axes.set_xscale("log")
    axes.set_title("Warm cache hits under wrk")
    axes.set_xlabel("connections")
    axes.set_ylabel("requests/s")
    axes.legend()


SCENARIO = Scenario("warm", run=run, render=render, judge=judge, plot=plot)
