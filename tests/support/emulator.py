"""The in-process Auth0 emulator as the emulator tests use it: its seed users, a fresh seeded
instance, an httpx client on it, and a Management API token."""

from __future__ import annotations

from typing import Any

import httpx
from userapi.domain import users
from userapi.emulator import (
    DEV_CLIENT_ID,
    DEV_CLIENT_SECRET,
    Emulator,
    EmulatorConfig,
    default_seed_path,
    load_seed,
)

BASE_URL = "http://auth0.test"
MANAGEMENT_AUDIENCE = f"{BASE_URL}/api/v2/"
ADA = "auth0|64f1c2a9e4b0a1b2c3d4e5f6"  # seed user with a password and read:users
ADA_EMAIL = "ada@example.com"
ADA_PASSWORD = "correct horse battery staple"
GRACE = "auth0|64f1c2a9e4b0a1b2c3d4e5f7"  # seed admin with all four permissions
ALAN = "google-oauth2|103547991597142817347"


def make_emulator(**overrides: Any) -> Emulator:
    config = EmulatorConfig(base_url=BASE_URL, seed_users=load_seed(default_seed_path()))
    for name, value in overrides.items():
        setattr(config, name, value)
    return Emulator(config)


def client_for(emulator: Emulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app), base_url=BASE_URL)


async def management_token(http: httpx.AsyncClient, scope: str | None = None) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": DEV_CLIENT_ID,
        "client_secret": DEV_CLIENT_SECRET,
        "audience": MANAGEMENT_AUDIENCE,
    }
    if scope is not None:
        form["scope"] = scope
    response = await http.post("/oauth/token", data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def user_path(user_id: str) -> str:
    """The Management API's path of a user."""
    return "/api/v2" + users.user_path(user_id)
