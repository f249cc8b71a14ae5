"""get-user's direct route (web/direct_routes.py) answers exactly as the FastAPI route it stands in
for: the same app is built with and without it, and each request is sent to both."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from userapi.domain.users import user_path
from userapi.endpoints import get_user
from userapi.web.app import create_app

from harness.emulator import EmulatorHandle
from harness.redis_server import RedisServer
from harness.userapi import migrate, service_env, settings_from

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _app(env: dict[str, str], *, direct: bool, fastapi_route: bool = True) -> FastAPI:
    settings = settings_from(env)
    routers = [get_user.router] if fastapi_route else []
    return create_app(
        "get-user", routers, settings, direct=get_user.ENDPOINT.direct_routes if direct else ()
    )


@pytest.fixture
async def clients(
    clean_emulator: EmulatorHandle, redis_server: RedisServer, database_url: str
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    migrate(database_url)
    env = service_env(clean_emulator, redis_server.url, database_url)
    apps = {
        "direct": _app(env, direct=True),
        "fastapi": _app(env, direct=False),
        "direct only": _app(env, direct=True, fastapi_route=False),
    }
    async with AsyncExitStack() as stack:
        clients = {}
        for name, app in apps.items():
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://test")
            )
        yield clients


def _comparable(response: httpx.Response) -> dict[str, Any]:
    body = response.json() if response.content else None
    if isinstance(body, dict) and "request_id" in body:
        body["request_id"] = "-"  # one per request, by design
    headers = {
        name: response.headers.get(name)
        for name in (
            "content-type",
            "content-length",
            "etag",
            "cache-control",
            "omitted-fields",
            "www-authenticate",
            "retry-after",
        )
    }
    return {"status": response.status_code, "body": body, "headers": headers}


async def test_every_outcome_matches_the_fastapi_route(
    clients: dict[str, httpx.AsyncClient], clean_emulator: EmulatorHandle
) -> None:
    ada = clean_emulator.create_user(f"ada-{secrets.token_hex(4)}@example.com", name="Ada")
    grace = clean_emulator.create_user(f"grace-{secrets.token_hex(4)}@example.com")
    own = clean_emulator.token(ada["user_id"])
    reader = clean_emulator.token(grace["user_id"], ["read:users"])

    def bearer(token: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", **extra}

    first = await clients["fastapi"].get("/users/me", headers=bearer(own))
    assert first.status_code == 200
    requests: list[tuple[str, dict[str, str]]] = [
        ("/users/me", bearer(own)),  # 200
        (user_path(ada["user_id"]), bearer(reader)),  # 200, another user with read:users
        (user_path(grace["user_id"]), bearer(own)),  # 403
        ("/users/not-an-id", bearer(own)),  # 403: read:users is judged before the id
        ("/users/not-an-id", bearer(reader)),  # 400
        ("/users/me", {}),  # 401, no token
        ("/users/me", bearer("not.a.jwt")),  # 401
        (user_path("auth0|000000000000000000000000"), bearer(reader)),  # 404
        ("/users/me", bearer(own, **{"If-None-Match": first.headers["etag"]})),  # 304
        ("/users/me", bearer(own, **{"If-None-Match": '"other"'})),  # 200
    ]
    # Twice: the second time the direct route answers from the process's own copy (and the
    # answers it rendered from it), which must not change a byte of what the caller gets.
    for _ in range(2):
        statuses = []
        for path, headers in requests:
            direct = await clients["direct"].get(path, headers=headers)
            through_fastapi = await clients["fastapi"].get(path, headers=headers)
            assert _comparable(direct) == _comparable(through_fastapi), path
            assert direct.headers["x-request-id"]
            statuses.append(direct.status_code)
        assert statuses == [200, 200, 403, 403, 400, 401, 401, 404, 304, 200]
    direct_app = clients["direct"]._transport.app  # type: ignore[attr-defined]
    assert len(direct_app.state.resources.local) >= 4  # both profiles, both rows, the 404


async def test_the_direct_route_answers_without_the_fastapi_route(
    clients: dict[str, httpx.AsyncClient], clean_emulator: EmulatorHandle
) -> None:
    ada = clean_emulator.create_user(f"ada-{secrets.token_hex(4)}@example.com", name="Ada")
    headers = {"Authorization": f"Bearer {clean_emulator.token(ada['user_id'])}"}
    client = clients["direct only"]
    response = await client.get("/users/me", headers=headers)
    assert (response.status_code, response.json()["name"]) == (200, "Ada")
    # What the direct route does not take goes on to FastAPI, which has no route for it here.
    for method, path in (("POST", "/users/me"), ("GET", "/users/me/extra"), ("GET", "/users/")):
        other = await client.request(method, path, headers=headers)
        assert other.status_code == 404, (method, path)
        assert other.json()["error"] == "not_found"
