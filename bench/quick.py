"""A first measurement on real Redis, PostgreSQL behind PgBouncer and the Auth0 emulator.

    .venv/bin/python -m bench.quick        (from the repository root)

Cold start: process exec -> first 200 of `GET /users/{id}` (profile and management token
already in Redis, token verified, account read through PgBouncer), median of 7, interleaved
with the same measure for a minimal FastAPI app (bench/hello_app.py) on the same uvicorn.
Then the cached path sequentially, and one uncached read with the emulator at 500 ms.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import httpx
import redis

from tests.support import (
    USERAPI,
    EmulatorHandle,
    PgBouncer,
    PostgresServer,
    RedisServer,
    ServiceProcess,
    free_port,
    migrate,
    service_env,
    stop_all,
    user_path,
)

USER = "auth0|64f1c2a9e4b0a1b2c3d4e5f6"


def _first_200(
    args: list[str], env: dict[str, str], url: str, headers: dict[str, str]
) -> tuple[float, ServiceProcess]:
    started = time.perf_counter()
    process = ServiceProcess(args, env=env)
    while True:
        try:
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                return time.perf_counter() - started, process
        except httpx.TransportError:
            pass
        time.sleep(0.002)


def main() -> None:
    cache, postgres = RedisServer(), PostgresServer()
    bouncer = PgBouncer(postgres)
    database = bouncer.dsn(postgres.create_database())
    migrate(database)
    emulator_port = free_port()
    emulator_process = ServiceProcess([USERAPI, "emulator", "--port", str(emulator_port)], env={})
    emulator_process.wait_healthy(f"http://127.0.0.1:{emulator_port}/.well-known/jwks.json", 20)
    emulator = EmulatorHandle(f"http://127.0.0.1:{emulator_port}")
    token = emulator.token(USER, ["read:users"])
    auth = {"Authorization": f"Bearer {token}"}
    # Production timeouts: the tests' tight ones would time out against a 500 ms Auth0.
    env = {
        **service_env(emulator, cache.url, database),
        "AUTH0_READ_TIMEOUT_SECONDS": "5",
        "AUTH0_REQUEST_BUDGET_SECONDS": "8",
    }
    python = str(Path(sys.executable))
    try:
        userapi_runs, hello_runs = [], []
        for run in range(8):
            userapi_port = free_port()
            elapsed, process = _first_200(
                [USERAPI, "serve", "get-user", "--port", str(userapi_port)],
                env,
                f"http://127.0.0.1:{userapi_port}{user_path(USER)}",
                auth,
            )
            if run:  # run 0 fills Redis with the profile and the management token
                userapi_runs.append(elapsed)
            if run < 7:
                process.terminate()
            port = free_port()
            hello_args = [
                python,
                "-m",
                "uvicorn",
                "bench.hello_app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ]
            elapsed, hello = _first_200(
                hello_args, {"PYTHONPATH": str(Path.cwd())}, f"http://127.0.0.1:{port}/hello", {}
            )
            hello.terminate()
            if run:
                hello_runs.append(elapsed)
        # The last userapi process is still running: measure its warm, cached path.
        client = httpx.Client(base_url=f"http://127.0.0.1:{userapi_port}", headers=auth)
        for _ in range(50):
            client.get(user_path(USER))
        latencies = []
        for _ in range(500):
            started = time.perf_counter()
            assert client.get(user_path(USER)).status_code == 200
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        emulator.latency(500)
        redis.Redis.from_url(cache.url).delete(f"userapi:profile:v1:{USER}")
        started = time.perf_counter()
        assert client.get(user_path(USER)).status_code == 200
        uncached = (time.perf_counter() - started) * 1000
        cold, hello_cold = statistics.median(userapi_runs), statistics.median(hello_runs)
        print(f"cold start, exec -> first 200, median of {len(userapi_runs)}:")
        print(f"  userapi get-user (cached profile): {cold * 1000:.0f} ms")
        print(f"  minimal FastAPI hello:             {hello_cold * 1000:.0f} ms")
        print(f"  ratio: {cold / hello_cold:.2f} (target <= 1.5)")
        print(
            f"cached GET /users/{{id}}, sequential, n=500: p50 {latencies[250]:.2f} ms, "
            f"p99 {latencies[494]:.2f} ms"
        )
        print(
            f"uncached with the emulator at 500 ms: {uncached:.0f} ms "
            f"({uncached / latencies[250]:.0f} x the cached p50)"
        )
        client.close()
        process.terminate()
    finally:
        emulator_process.terminate()
        stop_all()


if __name__ == "__main__":
    main()
