"""The Management API client in process, against the Auth0 emulator over real HTTP (timeouts
only exist on a real connection): its retries, its one re-authentication after a 401, and its
time budget. The emulator injects each failure (its /__emulator/faults control)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from userapi.adapters.auth0_management import ManagementClient
from userapi.adapters.shared_store import MemoryStore
from userapi.emulator import DEV_AUDIENCE, DEV_CLIENT_ID, DEV_CLIENT_SECRET
from userapi.platform.errors import Auth0Error, Auth0Rejected, Auth0Timeout
from userapi.platform.settings import Settings

from harness.emulator import EmulatorHandle, start_emulator

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ADA = "auth0|64f1c2a9e4b0a1b2c3d4e5f6"  # a seed user
GET_USER = "GET /api/v2/users/{id}"
CREATE_USER = "POST /api/v2/users"
TOKEN = "POST /oauth/token"


@pytest.fixture(scope="module")
def auth0() -> Iterator[EmulatorHandle]:
    handle = start_emulator()
    yield handle
    handle.close()


@pytest.fixture
def emulator(auth0: EmulatorHandle) -> EmulatorHandle:
    auth0.reset()
    return auth0


def settings(emulator: EmulatorHandle, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth0_domain": emulator.base_url,
        "auth0_allow_insecure_http": True,
        "auth0_audience": DEV_AUDIENCE,
        "auth0_client_id": DEV_CLIENT_ID,
        "auth0_client_secret": DEV_CLIENT_SECRET,
        "auth0_read_timeout_seconds": 0.3,
        "auth0_request_budget_seconds": 3.0,
        "auth0_max_retries": 3,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as client:
        yield client


def client(emulator: EmulatorHandle, http: httpx.AsyncClient, **overrides: Any) -> ManagementClient:
    return ManagementClient(settings(emulator, **overrides), http, MemoryStore(100))


async def test_an_idempotent_call_is_retried_through_5xx(emulator, http) -> None:
    emulator.fault(GET_USER, status=503, times=2)
    profile = await client(emulator, http).get_user(ADA)
    assert profile is not None
    assert profile["user_id"] == ADA
    assert emulator.calls(GET_USER) == 3


async def test_retries_stop_at_auth0_max_retries(emulator, http) -> None:
    emulator.fault(GET_USER, status=500, times=None)
    with pytest.raises(Auth0Error) as raised:
        await client(emulator, http, auth0_max_retries=2).get_user(ADA)
    assert raised.value.status == 500
    assert emulator.calls(GET_USER) == 3  # the call and two retries


async def test_a_create_is_not_retried_after_a_5xx(emulator, http) -> None:
    # A lost or failed answer to a POST may hide a user created anyway.
    emulator.fault(CREATE_USER, status=503, times=1)
    body = {"connection": "Username-Password-Authentication", "email": "x@example.com",
            "password": "Pa55word!x"}  # fmt: skip
    with pytest.raises(Auth0Error):
        await client(emulator, http).create_user(body)
    assert emulator.calls(CREATE_USER) == 1


async def test_a_429_is_retried_once_the_bucket_refills(emulator, http) -> None:
    reset = str(int(time.time()) + 1)
    emulator.fault(GET_USER, status=429, times=1, headers={"x-ratelimit-reset": reset})
    started = time.monotonic()
    assert await client(emulator, http).get_user(ADA) is not None
    assert emulator.calls(GET_USER) == 2
    assert time.monotonic() - started < 2.5  # waited for the reset, within the budget


async def test_a_401_fetches_a_new_token_once_and_retries(emulator, http) -> None:
    management = client(emulator, http)
    assert await management.get_user(ADA) is not None
    assert emulator.calls(TOKEN) == 1
    emulator.fault(GET_USER, status=401, times=1)  # a revoked token
    assert await management.get_user(ADA) is not None
    assert emulator.calls(TOKEN) == 2
    assert emulator.calls(GET_USER) == 3


async def test_a_second_401_is_not_answered_with_a_third_token(emulator, http) -> None:
    emulator.fault(GET_USER, status=401, times=2)  # wrong credentials: no token helps
    with pytest.raises(Auth0Rejected) as raised:
        await client(emulator, http).get_user(ADA)
    assert raised.value.status == 401
    assert emulator.calls(TOKEN) == 2
    assert emulator.calls(GET_USER) == 2


async def test_a_hanging_auth0_costs_at_most_the_time_budget(emulator, http) -> None:
    emulator.fault(GET_USER, kind="hang", times=None)
    management = client(emulator, http, auth0_request_budget_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(Auth0Timeout):
        await management.get_user(ADA)
    elapsed = time.monotonic() - started
    # Each attempt times out after the read timeout (0.3 s); retries stop when the next one
    # would not fit in the budget. The token fetch comes first and is quick.
    assert elapsed < 1.0 + 0.3
    assert emulator.calls(GET_USER) >= 2  # it did retry within the budget


async def test_a_hanging_token_endpoint_is_a_timeout_not_a_retry_storm(emulator, http) -> None:
    emulator.fault(TOKEN, kind="hang", times=None)
    started = time.monotonic()
    with pytest.raises(Auth0Timeout):
        await client(emulator, http).get_user(ADA)
    assert time.monotonic() - started < 1.0
    assert emulator.calls(TOKEN) == 1
    assert emulator.calls(GET_USER) == 0


async def test_a_token_endpoint_5xx_is_retried(emulator, http) -> None:
    emulator.fault(TOKEN, status=503, times=1)
    assert await client(emulator, http).get_user(ADA) is not None
    assert emulator.calls(TOKEN) == 2


async def test_refused_client_credentials_are_not_retried(emulator, http) -> None:
    management = client(emulator, http, auth0_client_secret="wrong")
    with pytest.raises(Auth0Error, match="token endpoint answered 401"):
        await management.get_user(ADA)
    assert emulator.calls(TOKEN) == 1
