"""Request bodies are bounded before they are read whole: a 413 JSON error, with or without a
Content-Length, and a larger bound for Auth0's event deliveries only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from userapi.web.middleware import MAX_BODY_BYTES

from harness.emulator import EmulatorHandle
from harness.userapi import in_process, service_env

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SECRET = "body-limit-events-secret-012345"


@pytest.fixture
def env(clean_emulator: EmulatorHandle, database_url: str) -> dict[str, str]:
    return service_env(clean_emulator, None, database_url) | {"AUTH0_EVENTS_SECRET": SECRET}


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 65536):
        yield b" " * 65536


def _assert_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == "payload_too_large"
    assert response.headers["x-request-id"] == body["request_id"]


async def test_a_body_over_the_limit_is_refused_by_its_content_length(env) -> None:
    async with in_process("create-user", env) as client:
        response = await client.post("/users", content=b" " * (MAX_BODY_BYTES + 1))
    _assert_413(response)


async def test_a_chunked_body_is_refused_once_it_passes_the_limit(env, clean_emulator) -> None:
    # A chunked body is read only once the caller is known (a declared length needs no token).
    token = clean_emulator.token("auth0|bodylimit0000000000000000")
    async with in_process("update-user", env) as client:
        response = await client.patch(
            "/users/me",
            content=_chunks(MAX_BODY_BYTES + 65536),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
    assert "content-length" not in response.request.headers
    _assert_413(response)


async def test_event_deliveries_may_be_larger_but_not_unbounded(env) -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    async with in_process("auth0-events", env) as client:
        # 2 MiB of one JSON string: read whole, then refused for what it says.
        document = b'"' + b"x" * (2 * MAX_BODY_BYTES) + b'"'
        within = await client.post("/events/auth0", content=document, headers=headers)
        over = await client.post("/events/auth0", content=b"x" * (6 * 1024 * 1024), headers=headers)
    assert within.status_code == 400, within.text
    _assert_413(over)
