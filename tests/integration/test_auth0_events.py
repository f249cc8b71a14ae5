"""auth0-events: the shared secret, Event and Log Streams, tombstones, odd items.

Each endpoint runs as its own process (tests/integration/conftest.py's `api`), sharing Redis
and PostgreSQL through PgBouncer."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx
import pytest
from userapi.domain.users import user_path

from harness.emulator import cloud_event, now_iso
from tests.support.api import API, EVENTS_SECRET, GET_ROUTE

pytestmark = pytest.mark.integration


def _events(
    api: API, payload: Any, secret: str | None = EVENTS_SECRET, raw: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    content = raw if raw is not None else json.dumps(payload)
    return api.call(
        "auth0-events",
        "POST",
        "/events/auth0",
        content=content,
        headers={**headers, "Content-Type": "application/json"},
    )


def test_events_need_the_shared_secret(api: API, user) -> None:
    event = cloud_event("user.updated", user)
    assert _events(api, event, secret=None).status_code == 401
    assert _events(api, event, secret="wrong").status_code == 401


def test_an_updated_event_refreshes_readers_and_older_ones_are_ignored(
    api: API, user, admin, clean_emulator
) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200  # cached
    before = now_iso()
    changed = clean_emulator.update_user(user["user_id"], name="Changed In Dashboard")
    newer = cloud_event("user.updated", changed)
    # Older than the profile the cache holds, and naming data it never takes from an event.
    older = cloud_event("user.updated", user, name="Stale Name")
    older["time"] = before
    result = _events(api, [newer, older, newer])  # out of order, and newer delivered twice
    assert result.status_code == 200, result.text
    assert result.json() | {"rejected": []} == {
        "received": 3,
        "applied": 1,
        "duplicates": 1,
        "ignored": 1,
        "rejected": [],
        "rejected_total": 0,
    }
    clean_emulator.reset()
    assert api.call("get-user", "GET", path, admin).json()["name"] == "Changed In Dashboard"
    assert api.call("get-user", "GET", path, admin).json()["name"] == "Changed In Dashboard"
    assert clean_emulator.calls(GET_ROUTE) == 1  # an event carries no profile: Auth0's, cached


def test_log_stream_writes_and_deletions_invalidate(api: API, user, admin, clean_emulator) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200
    entry = {
        "log_id": secrets.token_hex(8),
        "data": {
            "date": now_iso(),
            "type": "sapi",
            "description": "Update a user",
            "user_id": "auth0|theadminwhodidit0000000",
            "details": {
                "request": {
                    "method": "patch",
                    "path": "/api/v2/users/" + path.split("/")[-1],
                    "body": {"name": "x"},
                }
            },
        },
    }
    lines = "\n".join([json.dumps(entry), "{not json", json.dumps({"unexpected": True})])
    result = _events(api, None, raw=lines)
    assert result.status_code == 200, result.text
    assert result.json()["applied"] == 1
    assert [r["index"] for r in result.json()["rejected"]] == [1, 2]
    clean_emulator.reset()
    assert api.call("get-user", "GET", path, admin).status_code == 200
    assert clean_emulator.calls(GET_ROUTE) == 1  # the entry was dropped: fetched again


@pytest.mark.parametrize(
    ("method", "suffix", "status"),
    [("delete", "", 404), ("delete", "/multifactor/google-authenticator", 200)],
)
def test_a_logged_management_delete_of_the_user_leaves_a_tombstone(
    api: API, user, admin, clean_emulator, method: str, suffix: str, status: int
) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200
    request = {"method": method, "path": "/api/v2/users/" + path.split("/")[-1] + suffix}
    entry = {
        "log_id": secrets.token_hex(8),
        "data": {"type": "sapi", "date": now_iso(),
                 "user_id": "auth0|theadminwhodidit0000000", "details": {"request": request}},
    }  # fmt: skip
    assert _events(api, [entry]).json()["applied"] == 1
    # Deleting the user is a tombstone (404 from the cache); deleting one of its
    # sub-resources only invalidates, and the next read fetches the user again.
    assert api.call("get-user", "GET", path, admin).status_code == status


def test_a_deleted_event_is_served_as_404_and_an_older_update_cannot_undo_it(
    api: API, user, admin, clean_emulator
) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200
    late = cloud_event("user.updated", user)
    time.sleep(0.01)
    deleted = cloud_event("user.deleted", user)
    result = _events(api, [deleted, late])  # the older update arrives after the deletion
    assert (result.json()["applied"], result.json()["ignored"]) == (1, 1), result.text
    clean_emulator.reset()
    assert api.call("get-user", "GET", path, admin).status_code == 404
    assert clean_emulator.calls(GET_ROUTE) == 0  # the cache knows it is gone


def test_odd_items_are_rejected_one_by_one_never_a_500(
    api: API, user, admin, clean_emulator
) -> None:
    path = user_path(user["user_id"])
    assert api.call("get-user", "GET", path, admin).status_code == 200  # cached, with a "Z" time
    clean_emulator.update_user(user["user_id"], name="Naive Time")
    naive = cloud_event("user.updated", user)
    naive["time"] = naive["time"].removesuffix("Z")  # no offset: read as UTC
    odd_details = {"log_id": secrets.token_hex(8), "data": {"type": "sapi", "details": "oops"}}
    deletion = {
        "log_id": secrets.token_hex(8),
        "data": {"type": "sdu", "user_id": "auth0|x1", "date": now_iso()},
    }
    timeless = {"log_id": secrets.token_hex(8), "data": {"type": "sdu", "user_id": "auth0|x1"}}
    result = _events(api, [naive, odd_details, deletion, timeless])
    assert result.status_code == 200, result.text
    rejected = [r["index"] for r in result.json()["rejected"]]
    assert (result.json()["applied"], rejected) == (2, [1, 3])
    assert api.call("get-user", "GET", path, admin).json()["name"] == "Naive Time"


@pytest.mark.parametrize("raw", ["", "not json at all", "[1, 2]", '{"specversion": "1.0"}'])
def test_unreadable_deliveries_are_400(api: API, raw: str) -> None:
    response = _events(api, None, raw=raw)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "message", "request_id"}
