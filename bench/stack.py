"""The real components every scenario runs against, and the processes it starts on them.

One redis-server, one PostgreSQL (max_connections 100, PostgreSQL's default, so that the
no-pooler baseline meets the limit a real server has) and the Auth0 emulator; PgBouncers and
userapi processes are started per scenario. All on free ports, all stopped at the end.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from userapi.domain.users import user_path

from bench.load import LoadResult
from harness.emulator import start_emulator
from harness.pgbouncer import PgBouncer
from harness.postgres import PostgresServer
from harness.processes import USERAPI, ServiceProcess, free_port, stop_all
from harness.redis_server import RedisServer
from harness.userapi import migrate, service_env

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
# The seeded user every scenario reads unless it needs many (bench/scenarios/cache.py).
USER = "auth0|64f1c2a9e4b0a1b2c3d4e5f6"
READ_USERS = ["read:users"]
LIST_PAGE = "/users?per_page=5"  # list-users: one page of Auth0's user search


@dataclass
class Server:
    """A process answering HTTP on `base_url`, with the path that answers 200 once it is up."""

    name: str
    process: ServiceProcess
    base_url: str
    ready_path: str
    headers: dict[str, str] = field(default_factory=dict)
    # Taken just before the exec: a cold start is measured from here.
    spawned_at: float = field(default_factory=time.perf_counter)

    @property
    def url(self) -> str:
        return self.base_url + self.ready_path

    def stop(self) -> None:
        self.process.terminate()

    def warnings(self) -> list[str]:
        """The process's warning and error log lines so far."""
        return [
            line
            for line in self.process.log_text().splitlines()
            if '"level":"warning"' in line or '"level":"error"' in line
        ]

    def cache_outcomes(self, at_least: int = 0, timeout: float = 5.0) -> dict[str, int]:
        """How the profile cache served each request so far, from userapi's request log lines:
        hit, miss, coalesced (waited for another request's fetch), stale.

        The line is written just after the response is sent, so a client that has its answer
        may be ahead of it: `at_least` waits (up to `timeout`) for that many lines."""
        deadline = time.monotonic() + timeout
        while True:
            counts = cache_outcomes(self.process.log_text())
            if sum(counts.values()) >= at_least or time.monotonic() > deadline:
                return counts
            time.sleep(0.005)


def cache_outcomes(logs: str) -> dict[str, int]:
    """How the profile cache served each request, from userapi's request log lines."""
    counts: Counter[str] = Counter()
    for raw in logs.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("message") == "request":
            counts[str(line.get("cache"))] += 1
    return dict(counts)


def first_200(server: Server, timeout: float = 60) -> float:
    """Seconds from the exec until `server.url` first answered 200: the cold start. A fresh
    connection per try, as the first client of a new pod would have."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(server.url, headers=server.headers, timeout=10).status_code == 200:
                return time.perf_counter() - server.spawned_at
        except httpx.TransportError:
            pass
        if not server.process.running:
            break
        time.sleep(0.002)
    raise RuntimeError(f"{server.name} never answered 200:\n{server.process.log_text()[-3000:]}")


class Stack:
    def __init__(self) -> None:
        self.redis = RedisServer()
        self.postgres = PostgresServer(max_connections=100)
        self.database = self.postgres.database
        self.bouncer = self.pgbouncer()
        migrate(self.bouncer.dsn(self.database))
        self.emulator = start_emulator()
        self.emulator.rate_limit(burst=100_000, per_second=100_000.0)
        self.token = self.emulator.token(USER, READ_USERS)
        self.auth = {"Authorization": f"Bearer {self.token}"}

    def pgbouncer(self, server_connections: int | None = None) -> PgBouncer:
        """PgBouncer as the pod's sidecar runs it; `server_connections` caps what it may open."""
        if server_connections is None:
            return PgBouncer(self.postgres)
        return PgBouncer(
            self.postgres, pool_size=server_connections, max_db_connections=server_connections
        )

    def env(
        self,
        *,
        redis: bool = True,
        database_url: str | None = None,
        overrides: dict[str, str] | None = None,
    ) -> dict[str, str]:
        env = service_env(
            self.emulator,
            self.redis.url if redis else None,
            database_url or self.bouncer.dsn(self.database),
        )
        # Production timeouts: the tests' tight ones would time out against a 500 ms Auth0.
        env.update(
            AUTH0_READ_TIMEOUT_SECONDS="5",
            AUTH0_REQUEST_BUDGET_SECONDS="8",
        )
        env.update(overrides or {})
        return env

    def spawn_userapi(
        self,
        env: dict[str, str],
        user: str = USER,
        command: Sequence[str] = (USERAPI,),
        endpoint: str = "get-user",
        **extra_env: str,
    ) -> Server:
        """get-user (or `endpoint`: list-users ready on a page of 5, the others once healthz
        answers) by `command` (the installed `userapi`, or another tree's entry point)."""
        port, spawned_at = free_port(), time.perf_counter()
        process = ServiceProcess(
            [*command, "serve", endpoint, "--port", str(port)], env={**env, **extra_env}
        )
        base_url = f"http://127.0.0.1:{port}"
        if endpoint == "get-user":
            return Server("userapi", process, base_url, user_path(user), self.auth, spawned_at)
        ready = LIST_PAGE if endpoint == "list-users" else "/healthz"
        return Server(endpoint, process, base_url, ready, self.auth, spawned_at)

    def userapi(self, env: dict[str, str], user: str = USER, endpoint: str = "get-user") -> Server:
        """A running get-user (or list-users) process that has answered once (JWKS, token,
        pools warm)."""
        server = self.spawn_userapi(env, user, endpoint=endpoint)
        first_200(server)
        return server

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def flush_cache(self) -> None:
        with self.redis_client() as client:
            client.flushall()

    def create_users(self, count: int, tag: str) -> list[str]:
        """Users that exist in Auth0 (the emulator) and in no cache yet."""
        return [
            str(self.emulator.create_user(f"{tag}-{index}@bench.example")["user_id"])
            for index in range(count)
        ]

    def backing_cpu_seconds(self) -> dict[str, float]:
        """CPU used so far by Redis, the shared PgBouncer and PostgreSQL (all its processes)."""
        pids = {
            "redis": self.redis.process,
            "pgbouncer": self.bouncer.process,
            "postgres": self.postgres.process,
        }
        return {
            name: cpu_seconds(process.pid, children=name == "postgres") if process else 0.0
            for name, process in pids.items()
        }

    def close(self) -> None:
        self.emulator.close()
        stop_all()


def spawn_hello(**extra_env: str) -> Server:
    port, spawned_at = free_port(), time.perf_counter()
    process = ServiceProcess(
        [PYTHON, "-m", "uvicorn", "bench.yardsticks.hello_app:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log", "--no-server-header", "--ws", "none"],
        env={"PYTHONPATH": str(ROOT), **extra_env},
    )  # fmt: skip
    return Server(
        "fastapi-hello", process, f"http://127.0.0.1:{port}", "/hello", spawned_at=spawned_at
    )


def spawn_func_hello(**extra_env: str) -> Server:
    port, spawned_at = free_port(), time.perf_counter()
    process = ServiceProcess(
        [PYTHON, str(ROOT / "bench" / "yardsticks" / "func_hello.py")],
        env={"LISTEN_ADDRESS": f"127.0.0.1:{port}", "PYTHONPATH": str(ROOT), **extra_env},
    )
    return Server(
        "func-python-hello", process, f"http://127.0.0.1:{port}", "/", spawned_at=spawned_at
    )


def rss_kib(pid: int) -> dict[str, int]:
    """Resident memory now (VmRSS) and its peak since start (VmHWM), from /proc."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


async def with_cpu(server: Server, load: Awaitable[LoadResult]) -> tuple[LoadResult, float]:
    """`load` (not started yet: a wrk coroutine) and the server's own CPU per request over
    it, in µs."""
    before = cpu_seconds(server.process.pid)
    result = await load
    used = cpu_seconds(server.process.pid) - before
    return result, used / max(result.requests, 1) * 1e6


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU a process has used (and its direct children's: PostgreSQL's backends)."""
    total = _own_cpu(pid)
    if children:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited while we looked
            if int(fields[1]) == pid:
                total += _own_cpu(int(stat.parent.name))
    return total


def _own_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime: fields 14 and 15 of proc(5), counted after the ")" that ends the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
