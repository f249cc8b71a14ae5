"""In-process emulator fixtures: each test gets a fresh, seeded Emulator and an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from userapi.emulator import Emulator

from tests.support.emulator import client_for, make_emulator, management_token


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator() -> Emulator:
    return make_emulator()


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(emulator) as client:
        yield client


@pytest.fixture
async def admin(http: httpx.AsyncClient) -> dict[str, str]:
    """Authorization headers with a management token holding all four user scopes."""
    return {"Authorization": f"Bearer {await management_token(http)}"}
