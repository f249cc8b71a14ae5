"""Issue 11's reproducers, one test each: hostile bodies are a JSON 400 (413 for size) before
anything reaches Auth0, a profile already bad in Auth0 still reads, and 401 then 403 come
before anything about the body. On real Redis and PostgreSQL through PgBouncer."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from userapi.domain.users import user_path
from userapi.endpoints.auth0_events import ENDPOINT, REJECTED_LISTED
from userapi.platform.settings import Settings

from harness.emulator import EmulatorHandle, cloud_event, now_iso
from harness.userapi import in_process, migrate, service_env

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SECRET = "hostile-input-events-secret-0123"
CREATE = "POST /api/v2/users"
UPDATE = "PATCH /api/v2/users/{id}"
ALL = ["read:users", "create:users", "update:users", "delete:users"]
EVENTS_MAX_ITEMS: int = Settings.model_fields["events_max_items"].default
ENDPOINTS = ("get-user", "list-users", "create-user", "update-user", "delete-user", "auth0-events")


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
async def api(
    clean_emulator: EmulatorHandle, redis_server: Any, migrated: str
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    env = service_env(clean_emulator, redis_server.url, migrated)
    env["AUTH0_EVENTS_SECRET"] = SECRET
    env["API_DOCS"] = "true"  # section 7 reads each endpoint's contract
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(in_process(name, env)) for name in ENDPOINTS
        }
        for client in clients.values():
            # As a client sends JSON: without it, a framework may never parse what is tested.
            client.headers["Content-Type"] = "application/json"
        yield clients


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _json_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "message", "request_id"}, body
    return body


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


def _email() -> str:
    return f"hostile-{secrets.token_hex(4)}@example.com"


def _create_body(**fields: Any) -> dict[str, Any]:
    return {"email": _email(), "password": "Passw0rd!x", **fields}


def _raw(body: dict[str, Any]) -> bytes:
    """Encoded as an attacker would: NaN and lone surrogates written out, not refused."""
    return json.dumps(body, allow_nan=True).encode()


# 1. NUL (and other characters nothing downstream can store) ----------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"plan": "a\u0000b"},
        {"name": "Ada\u0000"},
        {"user_metadata": {"k\u0000": 1}},
        {"user_metadata": {"k": ["x", "\ud800"]}},
    ],
    ids=["nul-in-plan", "nul-in-name", "nul-in-metadata-key", "lone-surrogate"],
)
async def test_unstorable_characters_are_a_400_before_auth0_creates_anything(
    api, clean_emulator, fields
) -> None:
    token = clean_emulator.token("auth0|hostile0admin000000000000", ALL)
    body = _create_body(**fields)
    for key in (None, secrets.token_hex(8), None):  # and a retry with the same key
        headers = _bearer(token) | ({"Idempotency-Key": key} if key else {})
        response = await api["create-user"].post("/users", content=_raw(body), headers=headers)
        assert _json_error(response, 400)["error"] == "unstorable_value"
    assert clean_emulator.calls(CREATE) == 0
    assert (
        clean_emulator.http.get(
            "/api/v2/users-by-email",
            params={"email": body["email"]},
            headers=_bearer(clean_emulator.management_token()),
        ).json()
        == []
    )


@pytest.mark.parametrize(
    "fields",
    [{"plan": "a\u0000b"}, {"preferences": {"k\u0000": 1}}, {"preferences": {"k": "v\u0000"}}],
    ids=["plan", "preferences-key", "preferences-value"],
)
async def test_update_user_refuses_nul_before_auth0_changes(api, clean_emulator, fields) -> None:
    user = clean_emulator.create_user(_email())
    token = clean_emulator.token("auth0|hostile0admin000000000000", ALL)
    fields = {"name": "Changed", **fields}  # an Auth0 field too: Auth0 would be written first
    response = await api["update-user"].patch(
        user_path(user["user_id"]), content=_raw(fields), headers=_bearer(token)
    )
    _json_error(response, 400)
    assert clean_emulator.calls(UPDATE) == 0


# 2. NaN and Infinity -------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_nan_and_infinity_are_a_400(api, clean_emulator, literal) -> None:
    token = clean_emulator.token("auth0|hostile0admin000000000000", ALL)
    body = f'{{"email":"{_email()}","password":"Passw0rd!x","user_metadata":{{"n":{literal}}}}}'
    response = await api["create-user"].post("/users", content=body, headers=_bearer(token))
    _json_error(response, 400)
    assert clean_emulator.calls(CREATE) == 0


# 3. Deep nesting, and a profile that is already bad in Auth0 ---------------------------------


async def test_deep_metadata_is_a_400_and_creates_no_user(api, clean_emulator) -> None:
    token = clean_emulator.token("auth0|hostile0admin000000000000", ALL)
    for depth in (17, 400, 100_000):
        body = '{"email":"%s","password":"Passw0rd!x","user_metadata":%s}' % (  # noqa: UP031
            _email(),
            '{"n":' * depth + "1" + "}" * depth,
        )
        response = await api["create-user"].post("/users", content=body, headers=_bearer(token))
        _json_error(response, 400)
    assert clean_emulator.calls(CREATE) == 0


async def test_deep_self_service_metadata_is_a_400_and_the_profile_stays_readable(
    api, clean_emulator
) -> None:
    user = clean_emulator.create_user(_email())
    token = clean_emulator.token(user["user_id"])  # no permission: users edit their own
    response = await api["update-user"].patch(
        "/users/me", json={"user_metadata": {"deep": _nested(300)}}, headers=_bearer(token)
    )
    _json_error(response, 400)
    assert clean_emulator.calls(UPDATE) == 0
    assert (await api["get-user"].get("/users/me", headers=_bearer(token))).status_code == 200


async def test_a_profile_already_bad_in_auth0_still_reads(api, clean_emulator) -> None:
    """Metadata written around this API (the dashboard, an Action) too deep to render: the read
    answers 200 without that key and names it in Omitted-Fields; the rest is intact."""
    marker = secrets.token_hex(4)
    user = clean_emulator.create_user(
        f"bad-{marker}@example.com",
        user_metadata={"deep": _nested(300), "theme": "dark"},
    )
    token = clean_emulator.token("auth0|hostile0admin000000000000", ALL)
    for _ in range(2):  # from Auth0, then from the shared cache
        response = await api["get-user"].get(user_path(user["user_id"]), headers=_bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["user_metadata"] == {"theme": "dark"}
        assert response.headers["omitted-fields"] == "user_metadata.deep"
    listed = await api["list-users"].get(
        "/users", params={"q": f"email:bad-{marker}*"}, headers=_bearer(token)
    )
    assert listed.status_code == 200, listed.text
    assert listed.json()["users"][0]["user_metadata"] == {"theme": "dark"}
    assert listed.headers["omitted-fields"] == "users[0].user_metadata.deep"


# 4. auth0-events -----------------------------------------------------------------------------


async def test_a_deeply_nested_delivery_is_a_400_not_a_500(api) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    response = await api["auth0-events"].post(
        "/events/auth0", content=deep, headers=_bearer(SECRET)
    )
    _json_error(response, 400)


async def test_a_deeply_nested_json_line_is_one_rejected_item(api, clean_emulator) -> None:
    user = clean_emulator.create_user(_email())
    good = {
        "log_id": secrets.token_hex(8),
        "data": {"type": "sdu", "user_id": user["user_id"], "date": now_iso()},
    }
    nul = {"log_id": "nul\u0000", "data": {"type": "sdu", "user_id": user["user_id"]}}
    lines = [json.dumps(good).encode(), b"[" * 100_000 + b"]" * 100_000, json.dumps(nul).encode()]
    response = await api["auth0-events"].post(
        "/events/auth0", content=b"\n".join(lines), headers=_bearer(SECRET)
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["received"], result["applied"]) == (3, 1)
    assert [item["index"] for item in result["rejected"]] == [1, 2]


def _log_deletion(user: dict[str, Any], **data: Any) -> dict[str, Any]:
    return {
        "log_id": secrets.token_hex(8),
        "data": {"type": "sdu", "user_id": user["user_id"], "date": now_iso(), **data},
    }


async def test_unreadable_elements_of_a_json_array_are_rejected_and_the_rest_applied(
    api, clean_emulator
) -> None:
    """Log Streams' "JSON Array" format: one element the reader refuses is one rejected item,
    as one such line is in JSON lines, and the good elements beside it reach the cache."""
    updated, deleted = (clean_emulator.create_user(_email(), name="Original") for _ in range(2))
    token = clean_emulator.token("auth0|hostile0admin000000000000", ALL)
    for user in (updated, deleted):  # both cached before the delivery
        response = await api["get-user"].get(user_path(user["user_id"]), headers=_bearer(token))
        assert response.status_code == 200, response.text
    changed = clean_emulator.update_user(updated["user_id"], name="Changed In Auth0")
    elements = [
        json.dumps(cloud_event("user.updated", changed)).encode(),  # 0: good
        json.dumps(_log_deletion(deleted, description="a\x00b")).encode(),  # 1: U+0000, escaped
        _raw(_log_deletion(deleted, description="\ud800")),  # 2: a lone surrogate
        b'{"log_id": "raw-nul", "data": {"description": "a\x00b"}}',  # 3: a raw NUL in a string
        b"[" * 100_000 + b"]" * 100_000,  # 4: nested 100 000 deep
        _raw(_log_deletion(deleted, amount=float("nan"))),  # 5: NaN
        _raw(_log_deletion(deleted, amount=1e400)).replace(b"Infinity", b"1e400"),  # 6
        b'{"log_id": "cut", "data": [}]',  # 7: brackets that do not match
        json.dumps(_log_deletion(deleted)).encode(),  # 8: good
    ]
    response = await api["auth0-events"].post(
        "/events/auth0", content=b"[" + b",\n".join(elements) + b"]", headers=_bearer(SECRET)
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["received"], result["applied"]) == (9, 2), result
    reasons = {item["index"]: item["reason"] for item in result["rejected"]}
    assert list(reasons) == [1, 2, 3, 4, 5, 6, 7], result
    assert "U+0000" in reasons[1], reasons
    assert "unpaired surrogates" in reasons[2], reasons
    assert "control character" in reasons[3], reasons
    assert "deeper than 32" in reasons[4], reasons
    assert "NaN" in reasons[5], reasons
    assert "1e400" in reasons[6], reasons
    assert "not valid JSON" in reasons[7], reasons
    clean_emulator.reset()
    response = await api["get-user"].get(user_path(updated["user_id"]), headers=_bearer(token))
    assert response.json()["name"] == "Changed In Auth0"  # invalidated: read from Auth0 again
    response = await api["get-user"].get(user_path(deleted["user_id"]), headers=_bearer(token))
    assert response.status_code == 404  # the tombstone; Auth0 still has the user
    assert clean_emulator.calls("GET /api/v2/users/{id}") == 1


async def test_one_bad_element_in_an_array_as_large_as_a_delivery_may_be(api) -> None:
    """EVENTS_MAX_ITEMS log entries in about 5 MB (the body bound), one NaN in the middle: the
    entries are applied (one, then the same log_id again as duplicates) and only the NaN is
    rejected."""
    user = {"user_id": "auth0|" + secrets.token_hex(12)}
    # Padded so that the cap's worth of entries fills the body bound.
    size = len(json.dumps(_log_deletion(user)))
    pad = (ENDPOINT.max_body_bytes - 64) // EVENTS_MAX_ITEMS - size - len(', "description": ""') - 1
    entry = json.dumps(_log_deletion(user, description="x" * pad)).encode()
    count = EVENTS_MAX_ITEMS
    elements = [entry] * count
    elements[count // 2] = b'{"log_id": "nan", "data": {"n": NaN}}'
    body = b"[" + b",".join(elements) + b"]"
    assert ENDPOINT.max_body_bytes - 2 * len(entry) < len(body) <= ENDPOINT.max_body_bytes
    response = await api["auth0-events"].post(
        "/events/auth0", content=body, headers=_bearer(SECRET)
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["received"], result["applied"], result["duplicates"]) == (
        count,
        1,
        count - 2,
    )
    assert [item["index"] for item in result["rejected"]] == [count // 2]


async def test_refused_items_get_a_bounded_answer(api) -> None:
    """One good log entry and the rest of the cap of elements that are no event: the good one
    is applied, every other one counted, and only the first REJECTED_LISTED listed (listing all
    made a response 38 times the body)."""
    user = {"user_id": "auth0|" + secrets.token_hex(12)}
    count = EVENTS_MAX_ITEMS - 1
    body = b"[" + json.dumps(_log_deletion(user)).encode() + b",1" * count + b"]"
    response = await api["auth0-events"].post(
        "/events/auth0", content=body, headers=_bearer(SECRET)
    )
    assert response.status_code == 200, response.text[:500]
    result = response.json()
    assert (result["received"], result["applied"], result["rejected_total"]) == (
        count + 1,
        1,
        count,
    )
    assert [item["index"] for item in result["rejected"]] == list(range(1, REJECTED_LISTED + 1))
    assert len(response.content) < 20_000


async def test_a_million_items_are_refused_whole_at_once(api, clean_emulator) -> None:
    """About 2.6 million elements in 5 MB, a good deletion first: over EVENTS_MAX_ITEMS, so a
    small 413 before any is applied (each item costs the shared store round trips)."""
    user = clean_emulator.create_user(_email())
    token = clean_emulator.token("auth0|hostile0admin000000000000", ALL)
    good = json.dumps(_log_deletion(user)).encode()
    count = (ENDPOINT.max_body_bytes - len(good) - 64) // 2
    body = b"[" + good + b",1" * count + b"]"
    started = time.monotonic()
    response = await api["auth0-events"].post(
        "/events/auth0", content=body, headers=_bearer(SECRET), timeout=300
    )
    _json_error(response, 413)
    assert response.json()["error"] == "too_many_events"
    assert len(response.content) < 1000
    assert time.monotonic() - started < 30
    response = await api["get-user"].get(user_path(user["user_id"]), headers=_bearer(token))
    assert response.status_code == 200  # the deletion was not applied


@pytest.mark.parametrize(
    "body",
    [
        b'[{"log_id": "a", "data": {}}, {"log_id": "b", "data": {',  # truncated
        b'[{"log_id": "a", "data": {}}] {"log_id": "b"}',  # more after the array
        b'[{"log_id": "a", "data": {}}}',  # closed by the wrong bracket
        b"[NaN, 1e400, " + b"[" * 100_000 + b"]" * 100_000 + b"]",  # no element reads
        b"[" * 100_000,
    ],
    ids=["truncated", "trailing", "mismatched", "nothing-readable", "unclosed"],
)
async def test_a_delivery_that_is_no_readable_array_is_still_a_400(api, body: bytes) -> None:
    response = await api["auth0-events"].post(
        "/events/auth0", content=body, headers=_bearer(SECRET)
    )
    _json_error(response, 400)


async def test_a_string_of_escaped_quotes_is_read_in_linear_time(api, clean_emulator) -> None:
    """An unterminated string of 60 000 escaped quotes took the depth count minutes (it searched
    again from every quote); any body is judged in one pass."""
    token = clean_emulator.token("auth0|hostile0admin000000000000", ALL)
    body = b'{"email": "' + b'\\"' * 60_000
    for endpoint, path, authorization in (
        ("create-user", "/users", _bearer(token)),
        ("auth0-events", "/events/auth0", _bearer(SECRET)),
    ):
        started = time.monotonic()
        response = await api[endpoint].post(path, content=body, headers=authorization)
        _json_error(response, 400)
        assert time.monotonic() - started < 5, endpoint
    assert clean_emulator.calls(CREATE) == 0


# 6. 401, then 403, then the body -------------------------------------------------------------


GARBAGE = b'{"email": nonsense'


# Every call needs a permission its caller lacks (another user's id, or one the server could
# refuse as an id), and sends a body or query that is wrong as well.
NEEDS_PERMISSION = [
    ("create-user", "POST", "/users"),
    ("update-user", "PATCH", user_path("auth0|someoneelse00000000000000")),
    ("delete-user", "DELETE", "/users/not-an-id"),
    ("get-user", "GET", "/users/not-an-id"),
    ("list-users", "GET", "/users?per_page=0&q=nonsense"),
]
NEEDS_NO_PERMISSION = [
    ("update-user", "PATCH", "/users/me"),  # your own name fields and user_metadata
    ("auth0-events", "POST", "/events/auth0"),  # the shared secret only
]


@pytest.mark.parametrize(("endpoint", "method", "path"), NEEDS_PERMISSION + NEEDS_NO_PERMISSION)
async def test_no_token_is_a_401_whatever_the_body(api, endpoint, method, path) -> None:
    response = await api[endpoint].request(method, path, content=GARBAGE)
    _json_error(response, 401)


@pytest.mark.parametrize(("endpoint", "method", "path"), NEEDS_PERMISSION)
async def test_a_token_without_the_permission_is_a_403_whatever_the_body(
    api, clean_emulator, endpoint, method, path
) -> None:
    token = clean_emulator.token("auth0|nopermission000000000000000")
    response = await api[endpoint].request(method, path, content=GARBAGE, headers=_bearer(token))
    _json_error(response, 403)


async def test_the_body_is_judged_once_the_caller_may_call(api, clean_emulator) -> None:
    token = clean_emulator.token("auth0|hostile0admin000000000000", ALL)
    for endpoint, method, path in (
        ("create-user", "POST", "/users"),
        ("update-user", "PATCH", "/users/me"),
    ):
        response = await api[endpoint].request(
            method, path, content=GARBAGE, headers=_bearer(token)
        )
        _json_error(response, 400)
    response = await api["auth0-events"].post(
        "/events/auth0", content=GARBAGE, headers=_bearer(SECRET)
    )
    _json_error(response, 400)


# 7. The contract says what the API does ------------------------------------------------------


async def test_openapi_declares_304_and_no_null_the_api_refuses(api, clean_emulator) -> None:
    get_spec = (await api["get-user"].get("/openapi.json")).json()
    assert "304" in get_spec["paths"]["/users/{user_id}"]["get"]["responses"]
    update_spec = (await api["update-user"].get("/openapi.json")).json()
    fields = update_spec["components"]["schemas"]["UserUpdate"]["properties"]
    assert "null" not in json.dumps(fields)
    user = clean_emulator.create_user(_email())
    token = clean_emulator.token(user["user_id"])
    for field in fields:
        response = await api["update-user"].patch(
            "/users/me", json={field: None}, headers=_bearer(token)
        )
        assert _json_error(response, 400)["message"].startswith(field), field
