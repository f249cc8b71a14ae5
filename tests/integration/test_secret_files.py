"""Secrets mounted as files that cannot be read (a Secret missing from the pod, a bad mount):
a clear JSON error and a log line that names the setting, never a 500 with a traceback."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from userapi.domain.users import user_path

from harness.emulator import EmulatorHandle
from harness.userapi import in_process, service_env

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_an_unreadable_events_secret_file_is_a_503(
    clean_emulator: EmulatorHandle, database_url: str, tmp_path: Path
) -> None:
    env = service_env(clean_emulator, None, database_url) | {
        "AUTH0_EVENTS_SECRET_FILE": str(tmp_path / "absent")
    }
    async with in_process("auth0-events", env) as client:
        response = await client.post(
            "/events/auth0", content="[]", headers={"Authorization": "Bearer anything"}
        )
    assert response.status_code == 503, response.text
    assert set(response.json()) == {"error", "message", "request_id"}
    assert response.json()["error"] == "not_configured"


async def test_an_unreadable_client_secret_file_is_a_502_and_no_token_request(
    clean_emulator: EmulatorHandle, database_url: str, tmp_path: Path
) -> None:
    env = service_env(clean_emulator, None, database_url) | {
        "AUTH0_CLIENT_SECRET_FILE": str(tmp_path / "absent")
    }
    del env["AUTH0_CLIENT_SECRET"]
    user = clean_emulator.create_user(f"s-{secrets.token_hex(4)}@example.com")
    token = clean_emulator.token("auth0|reader000000000000000000", ["read:users"])
    clean_emulator.reset()
    async with in_process("get-user", env) as client:
        response = await client.get(
            user_path(user["user_id"]), headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 502, response.text
    assert set(response.json()) == {"error", "message", "request_id"}
    assert response.json()["error"] == "auth0_unavailable"
    assert clean_emulator.calls("POST /oauth/token") == 0  # nothing sent without a secret
