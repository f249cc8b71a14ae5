"""Connection budget: many processes under load against one PostgreSQL, each through its own
PgBouncer (as each pod has its sidecar), against the same processes connecting directly.

This is "1000 lambdas, 1000 connections" on a small scale: the peak of PostgreSQL's own count of
client connections (pg_stat_activity, sampled every 20 ms) and what the clients saw.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
from userapi.platform.settings import Settings

from bench.config import Profile
from bench.load import LoadResult, wrk
from bench.scenario import Result, Scenario, Verdict
from bench.stack import Server, Stack
from harness.pgbouncer import PgBouncer
from harness.userapi import migrate

_COUNT = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'"
)
_DEFAULT_POOL = int(Settings.model_fields["db_pool_max_size"].default)
_REFUSED_MARKERS = ("TooManyConnections", "too many clients", "too_many_connections")


async def run(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    per_process = profile.budget_clients // profile.budget_processes
    pooled = await _measure(stack, profile, workdir, pgbouncer=True, pool_size=None)
    # The app's own pool as configured for the pods (DB_POOL_MAX_SIZE's default)...
    direct = await _measure(stack, profile, workdir, pgbouncer=False, pool_size=None)
    # ...and sized to the process's concurrency, as a service without a pooler must be to avoid
    # queueing requests behind its connections.
    direct_sized = await _measure(stack, profile, workdir, pgbouncer=False, pool_size=per_process)
    return {
        "processes": profile.budget_processes,
        "clients": profile.budget_clients,
        "seconds": profile.budget_seconds,
        "postgres_max_connections": stack.postgres.max_connections,
        "pgbouncer": pooled,
        "direct": direct,
        "direct_pool_per_client": direct_sized,
    }


async def _measure(
    stack: Stack, profile: Profile, workdir: Path, *, pgbouncer: bool, pool_size: int | None
) -> dict[str, Any]:
    # A database of its own: the connections other scenarios' PgBouncers keep open are not counted.
    database = stack.postgres.create_database()
    migrate(stack.postgres.dsn(database))
    bouncers: list[PgBouncer] = []
    servers: list[Server] = []
    overrides = {"DB_POOL_MAX_SIZE": str(pool_size)} if pool_size else {}
    try:
        for _ in range(profile.budget_processes):
            if pgbouncer:
                bouncer = stack.pgbouncer(profile.budget_server_connections)
                bouncers.append(bouncer)
                url = bouncer.dsn(database)
            else:
                url = stack.postgres.dsn(database)
            servers.append(stack.userapi(stack.env(database_url=url, overrides=overrides)))
        # The first read opened one connection per process; start the count from the load.
        await asyncio.sleep(0.5)
        sampler = _PeakSampler(stack.postgres.admin_dsn(), database)
        await sampler.start()
        connections = profile.budget_clients // len(servers)
        loads: list[LoadResult] = await asyncio.gather(
            *(
                wrk(
                    server.url,
                    connections=connections,
                    seconds=profile.budget_seconds,
                    headers=server.headers,
                    workdir=workdir,
                )
                for server in servers
            )
        )
        peak = await sampler.stop()
        refused = sum(
            any(marker in line for marker in _REFUSED_MARKERS)
            for server in servers
            for line in server.process.log_text().splitlines()
        )
    finally:
        for server in servers:
            server.stop()
        for bouncer in bouncers:
            bouncer.stop()
    requests = sum(load.requests for load in loads)
    return {
        "app_pool_max_size": pool_size or _DEFAULT_POOL,
        "cap": profile.budget_processes * profile.budget_server_connections if pgbouncer else None,
        "peak_server_connections": peak,
        "requests": requests,
        "errors": sum(load.errors for load in loads),
        "error_log_lines_too_many_connections": refused,
        "rps": round(sum(load.rps for load in loads), 1),
        # Each wrk reports its own percentiles; the worst of them bounds the whole run's.
        "worst_p99_ms": max(load.p99_ms for load in loads),
        "worst_p50_ms": max(load.p50_ms for load in loads),
    }


class _PeakSampler:
    def __init__(self, admin_dsn: str, database: str) -> None:
        self._dsn = admin_dsn
        self._database = database
        self.peak = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        connection = await asyncpg.connect(self._dsn)
        self._task = asyncio.create_task(self._sample(connection))

    async def _sample(self, connection: asyncpg.Connection) -> None:
        try:
            while not self._stop.is_set():
                count = await connection.fetchval(_COUNT, self._database)
                self.peak = max(self.peak, int(count))
                await asyncio.sleep(0.02)
        finally:
            await connection.close()

    async def stop(self) -> int:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.peak


def judge(budget: Result) -> list[Verdict]:
    pooled = budget["pgbouncer"]
    return [
        Verdict(
            target="connection budget",
            goal=f"peak <= {pooled['cap']}, 0 errors",
            measured=f"peak {pooled['peak_server_connections']}, {pooled['errors']} errors",
            met=pooled["peak_server_connections"] <= pooled["cap"] and pooled["errors"] == 0,
        )
    ]


def render(budget: Result) -> list[str]:
    out = [
        "",
        f"**Connection budget**: {budget['processes']} processes, {budget['clients']} concurrent "
        f"clients for {budget['seconds']:g} s, PostgreSQL max_connections "
        f"{budget['postgres_max_connections']}:",
        "",
        "| Setup | App pool | Peak server connections | Requests | Errors | Refused logins "
        "log lines | req/s | worst p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labels = {
        "pgbouncer": "PgBouncer per process (2 server connections each)",
        "direct": "direct, pods' pool size",
        "direct_pool_per_client": "direct, pool = clients per process",
    }
    for key, label in labels.items():
        row = budget[key]
        out.append(
            f"| {label} | {row['app_pool_max_size']} | {row['peak_server_connections']} | "
            f"{row['requests']} | {row['errors']} | "
            f"{row['error_log_lines_too_many_connections']} | {row['rps']:.0f} | "
            f"{row['worst_p99_ms']:.0f} ms |"
        )
    return out


SCENARIO = Scenario("budget", run=run, render=render, judge=judge)
