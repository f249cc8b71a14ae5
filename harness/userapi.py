"""Endpoint processes: `userapi serve <endpoint>` wired to real Redis, PostgreSQL and the emulator,
the same app in-process behind httpx, and `userapi migrate`."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx
from userapi.emulator import DEV_AUDIENCE, DEV_CLIENT_ID, DEV_CLIENT_SECRET

from harness.emulator import EmulatorHandle
from harness.processes import HOST, USERAPI, ServiceProcess, code_env, free_port

if TYPE_CHECKING:
    from userapi.platform.settings import Settings

SHARED_CACHE_KEY = "test-shared-cache-key-0123456789abcdef"


def migrate(database_url: str) -> str:
    result = subprocess.run(
        [USERAPI, "migrate"],
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", **code_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"userapi migrate failed:\n{result.stderr}{result.stdout}")
    return result.stdout


def service_env(
    emulator: EmulatorHandle, redis_url: str | None, database_url: str
) -> dict[str, str]:
    env = {
        "AUTH0_DOMAIN": emulator.base_url,
        # The emulator speaks http on loopback: the explicit local switch Settings demands.
        "AUTH0_ALLOW_INSECURE_HTTP": "true",
        "AUTH0_AUDIENCE": DEV_AUDIENCE,
        "AUTH0_CLIENT_ID": DEV_CLIENT_ID,
        "AUTH0_CLIENT_SECRET": DEV_CLIENT_SECRET,
        "DATABASE_URL": database_url,
        # Short budgets so failure paths answer in test time, not production time.
        "AUTH0_READ_TIMEOUT_SECONDS": "0.5",
        "AUTH0_REQUEST_BUDGET_SECONDS": "2.5",
        "LOG_LEVEL": "INFO",
    }
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
        # As a deployment has it: the JWKS and the Management token are shared sealed.
        env["SHARED_CACHE_KEY"] = SHARED_CACHE_KEY
    return env


def settings_from(env: dict[str, str]) -> Settings:
    """The Settings a process started with `env` would read, for an app built in this one."""
    from userapi.platform.settings import Settings

    return Settings(**{name.lower(): value for name, value in env.items()})  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def in_process(endpoint: str, env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """One endpoint's app in this process, lifespan included, behind an httpx client: for the
    tests that change what it depends on between requests (a Redis killed, a file removed)."""
    from userapi import endpoints

    app = endpoints.build_app(endpoint, [endpoint], settings_from(env))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


class Service:
    def __init__(self, process: ServiceProcess, base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=15)

    def get(self, path: str, token: str | None = None, **headers: str) -> httpx.Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.get(path, headers=headers)

    def close(self) -> None:
        self.http.close()
        self.process.terminate()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.process.log_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
        return lines

    def request_logs(self, path: str | None = None, at_least: int = 1) -> list[dict[str, Any]]:
        """Request log lines (of `path`), waiting briefly: a line is written after its response."""
        deadline = time.monotonic() + 3
        while True:
            lines = [
                line
                for line in self.log_lines()
                if line.get("message") == "request" and path in (None, line.get("path"))
            ]
            if len(lines) >= at_least or time.monotonic() > deadline:
                return lines
            time.sleep(0.02)


def start_service(endpoint: str, env: dict[str, str]) -> Service:
    for attempt in range(3):
        port = free_port()
        process = ServiceProcess([USERAPI, "serve", endpoint, "--port", str(port)], env=env)
        base_url = f"http://{HOST}:{port}"
        try:
            process.wait_healthy(f"{base_url}/healthz", timeout=30)
        except RuntimeError as error:
            # free_port's port can be taken before the server binds it (by another process's
            # outgoing connection, say, with tests running side by side): another port.
            if "address already in use" in str(error) and attempt < 2:
                continue
            raise
        return Service(process, base_url)
    raise AssertionError("unreachable")


def start_services(endpoints: Sequence[str], env: dict[str, str]) -> dict[str, Service]:
    """`start_service` for each endpoint, started in parallel (each takes a second or two)."""
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        services = pool.map(lambda endpoint: start_service(endpoint, env), endpoints)
        return dict(zip(endpoints, services, strict=True))
