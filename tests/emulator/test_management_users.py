"""Management API v2 users: each route, Auth0's error bodies, scopes and write rules."""

from __future__ import annotations

import re
import time

import anyio
import httpx
import pytest
from userapi.emulator import Emulator

from tests.support.emulator import (
    ADA,
    ADA_EMAIL,
    ALAN,
    BASE_URL,
    MANAGEMENT_AUDIENCE,
    management_token,
    user_path,
)

pytestmark = pytest.mark.anyio

CONNECTION = "Username-Password-Authentication"
NOT_FOUND = {
    "statusCode": 404,
    "error": "Not Found",
    "message": "The user does not exist.",
    "errorCode": "inexistent_user",
}
AUTH0_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def create(
    http: httpx.AsyncClient, admin: dict[str, str], **fields: object
) -> httpx.Response:
    body = {"connection": CONNECTION, "email": "new@example.com", "password": "Pa55word!", **fields}
    return await http.post("/api/v2/users", json=body, headers=admin)


# Authentication and scopes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwdw==", "bearer x.y.z"],
)
async def test_requests_without_a_valid_token_are_401(
    http: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await http.get(user_path(ADA), headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "statusCode": 401,
        "error": "Unauthorized",
        "message": "Invalid token",
    }
    assert "x-ratelimit-remaining" in response.headers


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": BASE_URL + "/",
        "sub": "userapi-m2m@clients",
        "aud": MANAGEMENT_AUDIENCE,
        "iat": now,
        "exp": now + 60,
        "scope": "read:users create:users update:users delete:users",
    }
    claims.update(overrides)
    return claims


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": int(time.time()) - 10},
        {"aud": "https://userapi.local/api"},  # an API token is not a management token
        {"iss": "https://evil.example/"},
        {"exp": None},
    ],
)
async def test_tokens_with_bad_claims_are_401(
    emulator: Emulator, http: httpx.AsyncClient, overrides: dict[str, object]
) -> None:
    claims = {k: v for k, v in _claims(**overrides).items() if v is not None}
    response = await http.get(
        user_path(ADA), headers={"Authorization": f"Bearer {emulator.sign(claims)}"}
    )
    assert response.status_code == 401


async def test_user_access_tokens_are_refused(emulator: Emulator, http: httpx.AsyncClient) -> None:
    token = emulator.mint_access_token(ADA, permissions=["read:users"])
    response = await http.get(user_path(ADA), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", user_path(ADA), "read:users"),
        ("GET", "/api/v2/users", "read:users"),
        ("GET", f"/api/v2/users-by-email?email={ADA_EMAIL}", "read:users"),
        ("POST", "/api/v2/users", "create:users"),
        ("PATCH", user_path(ADA), "update:users"),
        ("DELETE", user_path(ADA), "delete:users"),
    ],
)
async def test_each_route_needs_its_scope(
    emulator: Emulator, http: httpx.AsyncClient, method: str, path: str, scope: str
) -> None:
    others = " ".join(
        s for s in ("read:users", "create:users", "update:users", "delete:users") if s != scope
    )
    token = emulator.sign(_claims(scope=others))
    json_body = {"connection": CONNECTION, "email": "x@example.com"} if method != "GET" else None
    response = await http.request(
        method, path, headers={"Authorization": f"Bearer {token}"}, json=json_body
    )
    assert response.status_code == 403
    assert response.json() == {
        "statusCode": 403,
        "error": "Forbidden",
        "message": f"Insufficient scope, expected any of: {scope}",
        "errorCode": "insufficient_scope",
    }
    assert ADA in emulator.users  # nothing happened


async def test_a_token_with_only_the_needed_scope_is_enough(http: httpx.AsyncClient) -> None:
    token = await management_token(http, scope="read:users")
    response = await http.get(user_path(ADA), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


# GET /api/v2/users/{id} --------------------------------------------------------------------------


async def test_get_user_by_encoded_id(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.get("/api/v2/users/auth0%7C64f1c2a9e4b0a1b2c3d4e5f6", headers=admin)
    assert response.status_code == 200
    user = response.json()
    assert user["user_id"] == ADA
    assert user["email"] == ADA_EMAIL
    assert user["identities"][0]["connection"] == CONNECTION
    assert "password" not in user
    assert "permissions" not in user


async def test_get_user_with_an_id_holding_more_pipes_and_an_at(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    user_id = "samlp|acme-corp|linus@acme.example"
    response = await http.get(
        "/api/v2/users/samlp%7Cacme-corp%7Clinus%40acme.example", headers=admin
    )
    assert response.status_code == 200
    assert response.json()["user_id"] == user_id


async def test_get_user_fields(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    only = await http.get(
        user_path(ADA), params={"fields": "user_id,email", "include_fields": "true"}, headers=admin
    )
    assert only.json() == {"user_id": ADA, "email": ADA_EMAIL}
    default_include = await http.get(user_path(ADA), params={"fields": "email"}, headers=admin)
    assert default_include.json() == {"email": ADA_EMAIL}
    without = await http.get(
        user_path(ADA), params={"fields": "identities,user_metadata", "include_fields": "false"},
        headers=admin,
    )  # fmt: skip
    assert "identities" not in without.json()
    assert "user_metadata" not in without.json()
    assert without.json()["user_id"] == ADA


async def test_get_unknown_user_is_404(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.get(user_path("auth0|000000000000000000000000"), headers=admin)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


async def test_unknown_query_parameters_are_400(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await http.get(user_path(ADA), params={"feilds": "email"}, headers=admin)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_query_string"
    bad_bool = await http.get(user_path(ADA), params={"include_fields": "yes"}, headers=admin)
    assert bad_bool.status_code == 400


# GET /api/v2/users-by-email ----------------------------------------------------------------------


async def test_users_by_email(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    exact = await http.get("/api/v2/users-by-email", params={"email": ADA_EMAIL}, headers=admin)
    assert [u["user_id"] for u in exact.json()] == [ADA]
    upper = await http.get(
        "/api/v2/users-by-email", params={"email": "Ada@EXAMPLE.com"}, headers=admin
    )
    assert [u["user_id"] for u in upper.json()] == [ADA]  # stored lower-case, so found
    partial = await http.get("/api/v2/users-by-email", params={"email": "ada@"}, headers=admin)
    assert partial.json() == []
    fields = await http.get(
        "/api/v2/users-by-email", params={"email": ADA_EMAIL, "fields": "user_id"}, headers=admin
    )
    assert fields.json() == [{"user_id": ADA}]
    missing = await http.get("/api/v2/users-by-email", headers=admin)
    assert missing.status_code == 400


async def test_users_by_email_returns_every_connection(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    emulator.store.create({"connection": "google-oauth2", "email": ADA_EMAIL, "user_id": "42"})
    response = await http.get("/api/v2/users-by-email", params={"email": ADA_EMAIL}, headers=admin)
    assert sorted(u["user_id"] for u in response.json()) == [ADA, "google-oauth2|42"]


# POST /api/v2/users ------------------------------------------------------------------------------


async def test_create_user(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await create(
        http, admin, email="New.User@Example.com", name="New User", given_name="New",
        user_metadata={"theme": "dark"}, app_metadata={"plan": "free"}, email_verified=True,
    )  # fmt: skip
    assert response.status_code == 201
    user = response.json()
    assert re.fullmatch(r"auth0\|[0-9a-f]{24}", user["user_id"])
    assert user["email"] == "new.user@example.com"  # lower-cased like a database connection
    assert user["email_verified"] is True
    assert (user["name"], user["given_name"]) == ("New User", "New")
    assert user["user_metadata"] == {"theme": "dark"}
    assert user["app_metadata"] == {"plan": "free"}
    assert AUTH0_TIMESTAMP.fullmatch(user["created_at"])
    assert user["updated_at"] == user["created_at"]
    assert user["identities"] == [
        {"connection": CONNECTION, "provider": "auth0", "user_id": user["user_id"][6:],
         "isSocial": False}
    ]  # fmt: skip
    assert "password" not in user
    assert "password" not in emulator.users[user["user_id"]]  # nor kept in the profile
    fetched = await http.get(user_path(user["user_id"]), headers=admin)
    assert fetched.json() == user


async def test_create_user_defaults_and_given_id(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    user = (await create(http, admin, email="jane@example.com", user_id="abc123")).json()
    assert user["user_id"] == "auth0|abc123"
    assert user["email_verified"] is False
    assert (user["name"], user["nickname"]) == ("jane@example.com", "jane")
    assert user["user_metadata"] == {}
    assert user["app_metadata"] == {}


async def test_duplicate_email_in_the_same_connection_is_409(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    assert (await create(http, admin)).status_code == 201
    duplicate = await create(http, admin, email="NEW@example.com")
    assert duplicate.status_code == 409
    assert duplicate.json() == {
        "statusCode": 409,
        "error": "Conflict",
        "message": "The user already exists.",
        "errorCode": "auth0_idp_error",
    }
    elsewhere = await create(http, admin, connection="other-db")
    assert elsewhere.status_code == 201  # another connection may hold the same email


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"email": "a@example.com"},
            "Payload validation error: 'Missing required property: connection'.",
        ),
        (
            {"connection": CONNECTION, "email": "a@example.com", "is_admin": True},
            "Payload validation error: 'Additional properties not allowed: is_admin'.",
        ),
        ({"connection": CONNECTION, "email": "not-an-email"}, None),
        ({"connection": CONNECTION, "email": "a@example.com", "email_verified": "yes"}, None),
        ({"connection": CONNECTION, "email": "a@example.com", "user_metadata": []}, None),
        ({"connection": CONNECTION, "email": "a@example.com", "app_metadata": {"a.b": 1}}, None),
        ({"connection": CONNECTION, "email": "a@example.com", "name": 5}, None),
    ],
)
async def test_invalid_creation_bodies_are_400(
    http: httpx.AsyncClient, admin: dict[str, str], body: dict[str, object], message: str | None
) -> None:
    response = await http.post("/api/v2/users", json=body, headers=admin)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_body"
    if message:
        assert response.json()["message"] == message


async def test_non_json_bodies_are_400(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.post("/api/v2/users", content=b"{oops", headers=admin)
    assert response.status_code == 400
    array = await http.post("/api/v2/users", json=[1], headers=admin)
    assert array.status_code == 400


# PATCH /api/v2/users/{id} ------------------------------------------------------------------------


async def test_patch_replaces_root_fields_and_merges_metadata_one_level(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = (
        await create(http, admin, user_metadata={"a": 1, "keep": True, "nested": {"x": 1, "y": 1}})
    ).json()
    await anyio.sleep(0.002)  # updated_at has millisecond resolution
    response = await http.patch(
        user_path(created["user_id"]),
        json={"name": "Renamed", "user_metadata": {"a": None, "b": 2, "nested": {"y": 2}},
              "app_metadata": {"plan": "pro"}},
        headers=admin,
    )  # fmt: skip
    assert response.status_code == 200
    user = response.json()
    assert user["name"] == "Renamed"
    # First level merged, null deleted, the nested object replaced whole.
    assert user["user_metadata"] == {"keep": True, "b": 2, "nested": {"y": 2}}
    assert user["app_metadata"] == {"plan": "pro"}
    assert user["updated_at"] > created["updated_at"]
    assert AUTH0_TIMESTAMP.fullmatch(user["updated_at"])
    assert user["created_at"] == created["created_at"]
    assert emulator.users[created["user_id"]] == user


async def test_patch_email_lowercases_and_conflicts(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    created = (await create(http, admin)).json()
    renamed = await http.patch(
        user_path(created["user_id"]), json={"email": "Other@Example.com"}, headers=admin
    )
    assert renamed.json()["email"] == "other@example.com"
    taken = await http.patch(
        user_path(created["user_id"]), json={"email": ADA_EMAIL}, headers=admin
    )
    assert taken.status_code == 409


async def test_patch_password_is_accepted_but_never_returned(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    response = await http.patch(
        user_path(ADA), json={"password": "new one", "connection": CONNECTION}, headers=admin
    )
    assert response.status_code == 200
    assert "password" not in response.json()
    assert "connection" not in response.json()
    assert emulator.store.passwords[ADA] == "new one"


@pytest.mark.parametrize(
    "body",
    [
        {"user_metadata": {"a.b": 1}},
        {"user_metadata": {"$set": 1}},
        {"app_metadata": {"deep": {"x.y": 1}}},
        {"user_metadata": "not an object"},
        {"is_admin": True},
        {"blocked": "yes"},
        {},
    ],
)
async def test_invalid_patches_are_400_and_change_nothing(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str], body: dict[str, object]
) -> None:
    before = dict(emulator.users[ADA])
    response = await http.patch(user_path(ADA), json=body, headers=admin)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "invalid_body"
    assert emulator.users[ADA] == before


async def test_patch_unknown_user_is_404(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    response = await http.patch(user_path("auth0|missing"), json={"name": "x"}, headers=admin)
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


# DELETE /api/v2/users/{id} -----------------------------------------------------------------------


async def test_delete_is_204_even_when_already_gone(
    emulator: Emulator, http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    first = await http.delete(user_path(ALAN), headers=admin)
    assert first.status_code == 204
    assert first.content == b""
    assert ALAN not in emulator.users
    assert (await http.delete(user_path(ALAN), headers=admin)).status_code == 204
    assert (await http.get(user_path(ALAN), headers=admin)).status_code == 404
