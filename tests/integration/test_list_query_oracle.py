"""Issue 26 item 3's reproducer: list-users' `q` check read Lucene by scanning for `word:`, so a
query that seemed to name only allowed fields could also search app_metadata, and `total` then
told whether a guess at a hidden value was right, one character at a time. Against the
emulator's own search (a real process), real Redis and PostgreSQL through PgBouncer."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from harness.emulator import EmulatorHandle
from harness.userapi import in_process, migrate, service_env

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Each passed the old check (it saw only created_at or name) and made the search engine run
# `app_metadata.secret:<guess>*` too: an unbalanced bracket in a range or a term hid the rest.
PROBES = [
    "created_at:[[a TO b] OR app_metadata.secret:{guess}*",
    "created_at:{{a TO b} OR app_metadata.secret:{guess}*",
    "name:a[b OR app_metadata.secret:{guess}* OR name:c]",
    # Escapes, regular expressions, quotes glued to a term, _exists_, nested groups.
    "name\\:x OR app_metadata.secret:{guess}*",
    "name:/x/ OR app_metadata.secret:{guess}*",
    'name:(a"b "app_metadata.secret:{guess}* "" c)',
    "_exists_:app_metadata.secret AND app_metadata.secret:{guess}*",
    "name:(x OR (app_metadata.secret:{guess}*))",
]


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
async def list_users(
    clean_emulator: EmulatorHandle, redis_server: Any, migrated: str
) -> AsyncIterator[httpx.AsyncClient]:
    env = service_env(clean_emulator, redis_server.url, migrated)
    async with contextlib.AsyncExitStack() as stack:
        yield await stack.enter_async_context(in_process("list-users", env))


@pytest.mark.parametrize("probe", PROBES)
async def test_a_hidden_field_cannot_be_read_through_q(
    list_users: httpx.AsyncClient, clean_emulator: EmulatorHandle, probe: str
) -> None:
    secret = secrets.token_hex(8)
    clean_emulator.create_user(
        f"oracle-{secrets.token_hex(4)}@example.com", app_metadata={"secret": secret}
    )
    token = clean_emulator.token("auth0|oracle0reader00000000000", ["read:users"])
    answers = {}
    wrong = "x"  # never a hex digit
    for guess in (secret[:9], secret[:8] + wrong):  # a right prefix, and one a character off
        response = await list_users.get(
            "/users",
            params={"q": probe.replace("{guess}", guess)},
            headers={"Authorization": f"Bearer {token}"},
        )
        answers[guess] = (response.status_code, response.json())
    leaked = {guess: body.get("total") for guess, (status, body) in answers.items()}
    # Before the fix: 200 both times, total 1 for the right prefix and 0 for the wrong one.
    assert [status for status, _ in answers.values()] == [400, 400], (
        f"q reads app_metadata: {leaked}"
    )
    for _, body in answers.values():
        assert set(body) == {"error", "message", "request_id"}
        assert body["error"] == "invalid_request"


async def test_the_same_search_on_an_allowed_field_still_answers(
    list_users: httpx.AsyncClient, clean_emulator: EmulatorHandle
) -> None:
    marker = secrets.token_hex(4)
    clean_emulator.create_user(f"oracle-{marker}@example.com", user_metadata={"theme": "dark"})
    token = clean_emulator.token("auth0|oracle0reader00000000000", ["read:users"])
    for q, total in [
        (f"email:oracle-{marker}* AND user_metadata.theme:dark", 1),
        (f'email:"oracle-{marker}@example.com" AND created_at:[2000-01-01 TO *]', 1),
        (f"email:oracle-{marker}* AND NOT user_metadata.theme:dark", 0),
    ]:
        response = await list_users.get(
            "/users", params={"q": q}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["total"] == total, q
