"""auth0-events while Redis is down: a change the shared cache could not take is answered 503,
so that Auth0 delivers it again, and its id is not remembered, so that the redelivery applies
it instead of being dropped as a duplicate."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis

from harness.emulator import EmulatorHandle, cloud_event, now_iso
from harness.redis_server import RedisServer
from harness.userapi import in_process, service_env

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SECRET = "outage-events-secret-0123456789"
RETRY_AFTER_ERROR_SECONDS = 0.2


@pytest.fixture
async def events(
    clean_emulator: EmulatorHandle, redis_server: RedisServer, database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    env = service_env(clean_emulator, redis_server.url, database_url) | {
        "AUTH0_EVENTS_SECRET": SECRET,
        "REDIS_RETRY_AFTER_ERROR_SECONDS": str(RETRY_AFTER_ERROR_SECONDS),
    }
    async with in_process("auth0-events", env) as client:
        yield client


async def _deliver(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post(
        "/events/auth0",
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
    )


async def _restart(redis_server: RedisServer) -> None:
    redis_server.start()
    await asyncio.sleep(RETRY_AFTER_ERROR_SECONDS * 2)  # the store skips Redis after an error


def _cached(redis_server: RedisServer, user_id: str) -> dict[str, Any] | None:
    with redis.Redis.from_url(redis_server.url) as client:
        keys = [key for key in client.keys("*") if key.decode().endswith(user_id)]
        raw = client.get(keys[0]) if keys else None
    return json.loads(raw) if raw else None


async def test_an_update_the_cache_could_not_take_is_refused_and_applied_when_redelivered(
    events: httpx.AsyncClient, redis_server: RedisServer
) -> None:
    user_id = "auth0|" + secrets.token_hex(12)
    event = cloud_event(
        "user.updated",
        {"user_id": user_id, "email": "outage@example.com"},
        name="Changed While Redis Was Down",
        updated_at="2099-01-01T00:00:00.000Z",
    )
    redis_server.kill()
    refused = await _deliver(events, event)
    assert refused.status_code == 503, refused.text
    assert set(refused.json()) == {"error", "message", "request_id"}
    assert refused.json()["error"] == "cache_unavailable"
    assert refused.headers["retry-after"] == "1"

    await _restart(redis_server)
    redelivered = await _deliver(events, event)
    assert redelivered.status_code == 200, redelivered.text
    assert (redelivered.json()["applied"], redelivered.json()["duplicates"]) == (1, 0)
    cached = _cached(redis_server, user_id)
    assert cached is not None  # an invalidation: no profile, never fresh, so readers ask Auth0
    assert (cached["profile"], cached["fresh_until"]) == (None, cached["fetched_at"])
    assert "Changed While Redis Was Down" not in json.dumps(cached)

    again = await _deliver(events, event)
    assert (again.json()["applied"], again.json()["duplicates"]) == (0, 1)


async def test_a_batch_with_one_change_the_cache_could_not_take_is_refused_whole(
    events: httpx.AsyncClient, redis_server: RedisServer
) -> None:
    deletion = {
        "log_id": secrets.token_hex(8),
        "data": {"date": now_iso(), "type": "sdu",
                 "user_id": "auth0|" + secrets.token_hex(12)},
    }  # fmt: skip
    unrelated = {"log_id": secrets.token_hex(8), "data": {"type": "s", "user_id": "x"}}
    redis_server.kill()
    refused = await _deliver(events, [unrelated, deletion])
    assert refused.status_code == 503, refused.text
    assert refused.json()["message"].startswith("1 of 2 events")

    await _restart(redis_server)
    redelivered = await _deliver(events, [unrelated, deletion])
    assert redelivered.status_code == 200, redelivered.text
    assert redelivered.json() | {"rejected": []} == {
        "received": 2,
        "applied": 1,
        "duplicates": 0,
        "ignored": 1,
        "rejected": [],
        "rejected_total": 0,
    }
