"""auth0-events believes an event names a user and a time, nothing more (issue 26, item 4).

The shared secret is a bearer token, not a signature over the body: whoever holds one delivery
(a log, a proxy, a leaked secret) can send any body. So a forged or replayed event must never
put its own profile in the cache, nor pin it there with a far-future time, nor bring back a
deleted user or old data; and a delivery is bounded in items (EVENTS_MAX_ITEMS), refused whole
when it is over. Real processes, real Redis and the emulator, with short windows so that "after
the dedupe window" is seconds away.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from userapi.domain.users import user_path

from harness.emulator import EmulatorHandle, cloud_event, now_iso
from harness.userapi import Service, migrate, service_env, start_services
from tests.support import bearer

pytestmark = pytest.mark.integration

SECRET = "trust-events-secret-0123456789ab"
GET_ROUTE = "GET /api/v2/users/{id}"
DEDUPE_SECONDS = 2.0
MAX_ITEMS = 5
# Longer than every window below: the dedupe window, a tombstone's life (max(negative TTL 1 s,
# AUTH0_REQUEST_BUDGET_SECONDS 2.5 s)) and a fresh entry's (2 s + 10 % jitter).
PAST_EVERY_WINDOW_SECONDS = 3.2


@pytest.fixture(scope="module")
def api(
    emulator: EmulatorHandle, redis_server: Any, database_url: str
) -> Iterator[dict[str, Service]]:
    migrate(database_url)
    env = service_env(emulator, redis_server.url, database_url) | {
        "AUTH0_EVENTS_SECRET": SECRET,
        "EVENT_DEDUPE_SECONDS": str(DEDUPE_SECONDS),
        "EVENTS_MAX_ITEMS": str(MAX_ITEMS),
        "PROFILE_FRESH_TTL_SECONDS": "2",
        "PROFILE_STALE_TTL_SECONDS": "0",
        "PROFILE_NEGATIVE_TTL_SECONDS": "1",
    }
    started = start_services(("get-user", "update-user", "delete-user", "auth0-events"), env)
    yield started
    for service in started.values():
        service.close()


@pytest.fixture
def admin(clean_emulator: EmulatorHandle) -> str:
    return clean_emulator.token(
        "auth0|trustadmin00000000000000000", ["read:users", "update:users", "delete:users"]
    )


def _new_user(emulator: EmulatorHandle, name: str) -> dict[str, Any]:
    return emulator.create_user(f"trust-{secrets.token_hex(4)}@example.com", name=name)


def _deliver(api: dict[str, Service], payload: Any, raw: str | None = None) -> httpx.Response:
    return api["auth0-events"].http.post(
        "/events/auth0",
        content=raw if raw is not None else json.dumps(payload),
        headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
    )


def _get(api: dict[str, Service], admin: str, user: dict[str, Any]) -> httpx.Response:
    response = bearer.request(api["get-user"].http, "GET", user_path(user["user_id"]), admin)
    assert response.status_code in (200, 404), response.text
    return response


def _counts(response: httpx.Response) -> tuple[int, int, int]:
    assert response.status_code == 200, response.text
    body = response.json()
    return body["applied"], body["duplicates"], body["ignored"]


def _sdu(user: dict[str, Any], date: str) -> dict[str, Any]:
    """A Log Streams entry: the user was deleted at `date`."""
    return {
        "log_id": secrets.token_hex(8),
        "data": {"type": "sdu", "user_id": user["user_id"], "date": date},
    }


def _seconds_ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


def test_a_forged_profile_is_never_served_and_later_updates_are_seen(
    api: dict[str, Service], admin: str, clean_emulator: EmulatorHandle
) -> None:
    user = _new_user(clean_emulator, "Real Name")
    assert _get(api, admin, user).json()["name"] == "Real Name"  # cached
    forged = cloud_event(
        "user.updated",
        user,
        name="Forged",
        email="attacker@evil.example",
        updated_at="2999-01-01T00:00:00.000Z",
    )
    forged["time"] = "2999-01-01T00:00:00.000Z"
    assert _deliver(api, forged).status_code == 200

    read = _get(api, admin, user).json()
    assert (read["name"], read["email"]) == ("Real Name", user["email"])  # Auth0's, not the event's

    # A genuine change made in Auth0, then its event: the next read sees it.
    clean_emulator.update_user(user["user_id"], name="Changed In Auth0")
    announced = cloud_event("user.updated", user, name="Changed In Auth0")
    assert _counts(_deliver(api, announced))[0] == 1
    assert _get(api, admin, user).json()["name"] == "Changed In Auth0"

    # A change through this API is cached at once: no far-future time blocks its write.
    path = user_path(user["user_id"])
    updated = bearer.request(
        api["update-user"].http, "PATCH", path, admin, json={"name": "Through The API"}
    )
    assert updated.status_code == 200, updated.text
    clean_emulator.reset()
    assert _get(api, admin, user).json()["name"] == "Through The API"
    assert clean_emulator.calls(GET_ROUTE) == 0  # served from what update-user cached


def test_a_replay_after_the_dedupe_window_restores_neither_a_deleted_user_nor_old_data(
    api: dict[str, Service], admin: str, clean_emulator: EmulatorHandle
) -> None:
    kept, gone = _new_user(clean_emulator, "First"), _new_user(clean_emulator, "Leaving")
    # Genuine deliveries, as whoever records them sees them.
    recorded = [cloud_event("user.updated", kept), cloud_event("user.updated", gone)]
    assert _counts(_deliver(api, recorded)) == (2, 0, 0)
    # Since then: `kept` changed in Auth0 (and its event came), `gone` was deleted.
    clean_emulator.update_user(kept["user_id"], name="Second")
    assert _counts(_deliver(api, cloud_event("user.updated", kept, name="Second")))[0] == 1
    response = bearer.request(api["delete-user"].http, "DELETE", user_path(gone["user_id"]), admin)
    assert response.status_code == 204, response.text
    assert _get(api, admin, kept).json()["name"] == "Second"
    assert _get(api, admin, gone).status_code == 404

    time.sleep(PAST_EVERY_WINDOW_SECONDS)  # ids forgotten, tombstone and entries expired
    replayed = _deliver(api, recorded)
    assert _get(api, admin, kept).json()["name"] == "Second"
    assert _get(api, admin, gone).status_code == 404
    assert _counts(replayed) == (0, 0, 2), replayed.text  # too old to act on


def test_a_replayed_or_outdated_deletion_does_not_hide_a_user(
    api: dict[str, Service], admin: str, clean_emulator: EmulatorHandle
) -> None:
    user = _new_user(clean_emulator, "Still Here")
    assert _get(api, admin, user).status_code == 200
    # Older than the dedupe window: its id may be forgotten, so it may be a replay.
    old = _deliver(api, [_sdu(user, _seconds_ago(DEDUPE_SECONDS + 5))])
    assert _get(api, admin, user).status_code == 200
    assert _counts(old) == (0, 0, 1), old.text

    # Within the window, but older than the profile the cache holds: the user changed after.
    path = user_path(user["user_id"])
    before = _seconds_ago(0.5)
    time.sleep(0.1)
    response = bearer.request(api["update-user"].http, "PATCH", path, admin, json={"name": "New"})
    assert response.status_code == 200, response.text
    outdated = _deliver(api, [_sdu(user, before)])
    assert _get(api, admin, user).status_code == 200
    assert _counts(outdated) == (0, 0, 1), outdated.text

    # A deletion of now is applied: the user is gone from the cache at once.
    assert _counts(_deliver(api, [_sdu(user, now_iso())]))[0] == 1
    assert _get(api, admin, user).status_code == 404


def test_an_event_without_a_time_is_rejected(api: dict[str, Service]) -> None:
    user = {"user_id": "auth0|" + secrets.token_hex(12)}
    timeless = cloud_event("user.updated", user)
    del timeless["time"]
    unreadable = _sdu(user, "yesterday")
    response = _deliver(api, [timeless, unreadable, _sdu(user, now_iso())])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["applied"], [item["index"] for item in body["rejected"]]) == (1, [0, 1])
    assert all("time" in item["reason"] for item in body["rejected"])


def test_a_delivery_over_the_item_cap_is_refused_whole(
    api: dict[str, Service], admin: str, clean_emulator: EmulatorHandle
) -> None:
    users = [_new_user(clean_emulator, f"Capped {index}") for index in range(3)]
    for user in users:
        assert _get(api, admin, user).status_code == 200  # cached
    other = {"log_id": secrets.token_hex(8), "data": {"type": "s", "user_id": "x"}}
    items = [_sdu(user, now_iso()) for user in users] + [other] * (MAX_ITEMS + 1 - len(users))
    assert len(items) == MAX_ITEMS + 1
    for over in (
        _deliver(api, items),  # a JSON array
        _deliver(api, None, raw="\n".join(json.dumps(item) for item in items)),  # JSON lines
    ):
        assert over.status_code == 413, over.text
        assert set(over.json()) == {"error", "message", "request_id"}
        assert over.json()["error"] == "too_many_events"
        assert str(MAX_ITEMS) in over.json()["message"]

    clean_emulator.reset()
    for user in users:  # nothing was applied: every user is still served from the cache
        assert _get(api, admin, user).status_code == 200
    assert clean_emulator.calls(GET_ROUTE) == 0

    within = _deliver(api, items[:MAX_ITEMS])
    assert _counts(within) == (3, 0, 2), within.text
    for user in users:
        assert _get(api, admin, user).status_code == 404
