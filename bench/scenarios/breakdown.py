"""Where a cached read's CPU goes: the get-user app driven in this process (no HTTP server, no
load generator), with the same read taken apart step by step.

Each variant is timed by process CPU over sequential requests:
- `GET /users/{id}` as served: the direct route (web/direct_routes.py), answered from the
  process's own copy (adapters/local_cache.py), and the same without that copy;
- the same endpoint through its FastAPI route;
- the same work as a plain Starlette route (no FastAPI dependency solving or validation);
- that route without the account read, then without the Redis read too;
- one redis-py GET, and one GET written by hand on asyncio streams, as a floor for the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from userapi import endpoints
from userapi.adapters.access_tokens import authenticate
from userapi.domain.users import User, etag, target_user
from userapi.platform import logs
from userapi.web.app import create_app
from userapi.web.direct_routes import DirectGet

from bench.config import Profile
from bench.scenario import Result, Scenario
from bench.stack import USER, Stack
from harness.userapi import settings_from

ASGIApp = Callable[..., Awaitable[None]]


async def run(stack: Stack, profile: Profile, _workdir: Path) -> dict[str, Any]:
    env = stack.env()
    settings = settings_from(env)
    endpoint = endpoints.load("get-user")
    # The direct route as `userapi serve get-user` installs it, under another prefix so that
    # the FastAPI route stays reachable beside it.
    direct = [DirectGet("/direct" + route.path, route.handler) for route in endpoint.direct_routes]
    app = create_app("get-user", [endpoint.router], settings, direct=direct)
    for path, reads in (("/plain/{user_id}", "both"), ("/plain-nodb/{user_id}", "redis")):
        app.router.routes.insert(0, Route(path, _plain_route(reads)))
    app.router.routes.insert(0, Route("/plain-bare/{user_id}", _plain_route("none")))
    n = profile.cached_samples * 5
    with logs_to_devnull(settings.log_level):
        async with app.router.lifespan_context(app):
            variants = {
                "direct_route": f"/direct/users/{USER}",
                "fastapi_route": f"/users/{USER}",
                "plain_route": f"/plain/{USER}",
                "plain_route_without_account_read": f"/plain-nodb/{USER}",
                "plain_route_without_account_or_redis_read": f"/plain-bare/{USER}",
            }
            cpu_us = {}
            for name, path in variants.items():
                cpu_us[name] = await _cpu_per_call(getter(app, path, stack.auth), n)
            resources = app.state.resources
            key = resources.profiles.key(USER)
            cpu_us["redis_py_get"] = await _cpu_per_call(lambda: resources.store.get(key), n)
        # The direct route as it was before the process's own copy: every read batched to
        # Redis and PostgreSQL (LOCAL_CACHE_SECONDS=0).
        uncopied = create_app(
            "get-user",
            [endpoint.router],
            settings.model_copy(update={"local_cache_seconds": 0}),
            direct=direct,
        )
        async with uncopied.router.lifespan_context(uncopied):
            cpu_us["direct_route_without_the_process_copy"] = await _cpu_per_call(
                getter(uncopied, f"/direct/users/{USER}", stack.auth), n
            )
    cpu_us["hand_written_resp_get"] = await _resp_floor(stack, key, n)
    return {
        "method": "in process, sequential, CPU time per call (time.process_time)",
        "calls_per_variant": n,
        "cpu_us_per_call": {name: round(us) for name, us in cpu_us.items()},
    }


def _plain_route(reads: str) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        resources = request.app.state.resources
        principal = await authenticate(resources.verifier, request.headers.get("authorization"))
        target = target_user(request.path_params["user_id"], principal)
        account = await resources.accounts.get(target) if reads == "both" else None
        if reads == "none":
            profile: dict[str, Any] | None = {"user_id": target, "email": "ada@example.com"}
        else:
            profile = (await resources.profiles.get(target)).profile
        assert profile is not None
        body = User.model_validate({**profile, "account": account}).model_dump_json()
        return Response(
            body, media_type="application/json", headers={"ETag": etag(profile, account)}
        )

    return route


def getter(app: ASGIApp, path: str, headers: dict[str, str]) -> Callable[[], Awaitable[None]]:
    return lambda: _get(app, path, headers)


async def _get(app: ASGIApp, path: str, headers: dict[str, str]) -> None:
    status: list[int] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    if status != [200]:
        raise RuntimeError(f"{path} answered {status}")


async def _cpu_per_call(call: Callable[[], Awaitable[object]], n: int) -> float:
    for _ in range(n // 10):  # warm: pools, memos, first-use imports
        await call()
    started = time.process_time()
    for _ in range(n):
        await call()
    return (time.process_time() - started) / n * 1e6


async def _resp_floor(stack: Stack, key: str, n: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.redis.port)
    command = f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode()

    async def get() -> bytes:
        writer.write(command)
        size = int((await reader.readline())[1:])
        return await reader.readexactly(size + 2) if size >= 0 else b""

    try:
        return await _cpu_per_call(get, n)
    finally:
        writer.close()


@contextlib.contextmanager
def logs_to_devnull(level: str) -> Iterator[None]:
    """The request log line is part of the cost: written, but to /dev/null."""
    with open(os.devnull, "w") as devnull:
        with contextlib.redirect_stdout(devnull):
            logs.configure(level)
        try:
            yield
        finally:
            logging.getLogger().handlers.clear()


def render(b: Result) -> list[str]:
    return [
        "",
        f"**Where a cached read's CPU goes** ({b['method']}, {b['calls_per_variant']} calls "
        "each, µs): "
        + ", ".join(f"{name.replace('_', ' ')} {us}" for name, us in b["cpu_us_per_call"].items())
        + ".",
    ]


SCENARIO = Scenario("breakdown", run=run, render=render)
