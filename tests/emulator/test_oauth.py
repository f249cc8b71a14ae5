"""POST /oauth/token: client credentials (management and API audiences), password grant, errors."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import jwt
import pytest
from userapi.emulator import DEV_AUDIENCE, DEV_CLIENT_ID, DEV_CLIENT_SECRET, Emulator

from tests.support.emulator import (
    ADA,
    ADA_EMAIL,
    ADA_PASSWORD,
    BASE_URL,
    GRACE,
    MANAGEMENT_AUDIENCE,
    client_for,
    make_emulator,
)

pytestmark = pytest.mark.anyio

CREDENTIALS = {
    "grant_type": "client_credentials",
    "client_id": DEV_CLIENT_ID,
    "client_secret": DEV_CLIENT_SECRET,
    "audience": MANAGEMENT_AUDIENCE,
}
PASSWORD_GRANT = {
    "grant_type": "password",
    "client_id": DEV_CLIENT_ID,
    "client_secret": DEV_CLIENT_SECRET,
    "audience": DEV_AUDIENCE,
    "username": ADA_EMAIL,
    "password": ADA_PASSWORD,
}


def verified(emulator: Emulator, token: str, audience: str) -> dict[str, Any]:
    key = emulator.keys.current.private_key.public_key()
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["RS256"], audience=audience, issuer=BASE_URL + "/"
    )
    return claims


async def test_management_token_from_a_form_body(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    response = await http.post("/oauth/token", data=CREDENTIALS)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400
    assert body["scope"].split() == ["read:users", "update:users", "delete:users", "create:users"]
    assert response.headers["cache-control"] == "no-store"
    claims = verified(emulator, body["access_token"], MANAGEMENT_AUDIENCE)
    assert claims["sub"] == f"{DEV_CLIENT_ID}@clients"
    assert claims["azp"] == DEV_CLIENT_ID
    assert claims["gty"] == "client-credentials"
    assert claims["aud"] == MANAGEMENT_AUDIENCE
    assert claims["scope"] == body["scope"]
    assert claims["exp"] - claims["iat"] == 86400
    assert "permissions" not in claims  # Management API tokens carry scopes only


async def test_management_token_from_json_and_basic_auth(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    assert (await http.post("/oauth/token", json=CREDENTIALS)).status_code == 200
    basic = base64.b64encode(f"{DEV_CLIENT_ID}:{DEV_CLIENT_SECRET}".encode()).decode()
    body = {"grant_type": "client_credentials", "audience": MANAGEMENT_AUDIENCE}
    response = await http.post(
        "/oauth/token", data=body, headers={"Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200
    claims = verified(emulator, response.json()["access_token"], MANAGEMENT_AUDIENCE)
    assert claims["sub"] == f"{DEV_CLIENT_ID}@clients"


async def test_management_token_with_fewer_scopes(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    response = await http.post("/oauth/token", data={**CREDENTIALS, "scope": "read:users"})
    assert response.json()["scope"] == "read:users"
    claims = verified(emulator, response.json()["access_token"], MANAGEMENT_AUDIENCE)
    assert claims["scope"] == "read:users"


async def test_management_scopes_outside_the_grant_are_refused(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/oauth/token", data={**CREDENTIALS, "scope": "read:logs read:users"}
    )
    assert response.status_code == 403
    assert response.json() == {
        "error": "access_denied",
        "error_description": "Client has not been granted scopes: read:logs",
    }


async def test_api_token_carries_requested_permissions(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    form = {**CREDENTIALS, "audience": DEV_AUDIENCE, "scope": "read:users update:users"}
    response = await http.post("/oauth/token", data=form)
    assert response.status_code == 200
    assert response.json()["expires_in"] == 3600
    claims = verified(emulator, response.json()["access_token"], DEV_AUDIENCE)
    assert claims["permissions"] == ["read:users", "update:users"]
    assert claims["scope"] == "read:users update:users"
    assert claims["sub"] == f"{DEV_CLIENT_ID}@clients"
    assert claims["gty"] == "client-credentials"


async def test_api_token_without_a_scope_gets_its_whole_grant(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    response = await http.post("/oauth/token", data={**CREDENTIALS, "audience": DEV_AUDIENCE})
    claims = verified(emulator, response.json()["access_token"], DEV_AUDIENCE)
    assert claims["scope"].split() == emulator.config.api_permissions
    assert claims["permissions"] == emulator.config.api_permissions


async def test_api_scopes_outside_the_grant_are_refused(http: httpx.AsyncClient) -> None:
    form = {**CREDENTIALS, "audience": DEV_AUDIENCE, "scope": "read:users admin:all"}
    response = await http.post("/oauth/token", data=form)
    assert response.status_code == 403
    assert response.json()["error_description"] == "Client has not been granted scopes: admin:all"


ALL_FOUR = "read:users create:users update:users delete:users"


async def test_with_rbac_a_users_scope_is_what_was_asked_and_assigned(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    form = {**PASSWORD_GRANT, "scope": "openid email " + ALL_FOUR}
    claims = verified(
        emulator, (await http.post("/oauth/token", data=form)).json()["access_token"], DEV_AUDIENCE
    )
    assert claims["scope"] == "openid email read:users"
    assert claims["permissions"] == ["read:users"]


async def test_without_rbac_a_user_gets_any_scope_asked_and_no_permissions_claim(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    emulator.rbac = False
    form = {**PASSWORD_GRANT, "scope": "openid undefined:thing " + ALL_FOUR}
    body = (await http.post("/oauth/token", data=form)).json()
    claims = verified(emulator, body["access_token"], DEV_AUDIENCE)
    assert claims["scope"] == "openid " + ALL_FOUR
    assert "permissions" not in claims
    app = await http.post("/oauth/token", data={**CREDENTIALS, "audience": DEV_AUDIENCE})
    app_claims = verified(emulator, app.json()["access_token"], DEV_AUDIENCE)
    assert (app_claims["scope"], "permissions" in app_claims) == (ALL_FOUR, False)
    emulator.reset()
    assert emulator.rbac is True


async def test_rbac_is_switched_by_a_control_route(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    assert (await http.put("/__emulator/rbac", json={"enabled": False})).json() == {
        "enabled": False
    }
    assert emulator.rbac is False
    assert (await http.put("/__emulator/rbac", json={"enabled": 0})).status_code == 400
    await http.post("/__emulator/reset")
    assert emulator.rbac is True


async def test_password_grant_issues_a_user_token(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    logins = emulator.users[ADA].get("logins_count", 0)
    response = await http.post("/oauth/token", data={**PASSWORD_GRANT, "scope": "read:users"})
    assert response.status_code == 200
    body = response.json()
    assert "id_token" not in body
    claims = verified(emulator, body["access_token"], DEV_AUDIENCE)
    assert claims["sub"] == ADA
    assert claims["permissions"] == ["read:users"]  # the seed user's, not the requested scope
    assert claims["aud"] == DEV_AUDIENCE
    assert "gty" not in claims
    assert emulator.users[ADA]["logins_count"] == logins + 1


async def test_password_grant_with_openid_adds_userinfo_audience_and_id_token(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    form = {**PASSWORD_GRANT, "username": "ADA@Example.com", "scope": "openid profile"}
    body = (await http.post("/oauth/token", data=form)).json()
    claims = verified(emulator, body["access_token"], DEV_AUDIENCE)
    assert claims["aud"] == [DEV_AUDIENCE, f"{BASE_URL}/userinfo"]
    id_claims = verified(emulator, body["id_token"], DEV_CLIENT_ID)
    assert (id_claims["sub"], id_claims["email"]) == (ADA, ADA_EMAIL)


async def test_password_grant_for_the_admin_seed_user(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    form = {
        **PASSWORD_GRANT,
        "username": "grace@example.com",
        "password": "admin admin admin admin",
    }
    body = (await http.post("/oauth/token", data=form)).json()
    claims = verified(emulator, body["access_token"], DEV_AUDIENCE)
    assert claims["sub"] == GRACE
    assert sorted(claims["permissions"]) == [
        "create:users", "delete:users", "read:users", "update:users",
    ]  # fmt: skip


async def test_password_grant_for_a_created_user(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    user = emulator.store.create(
        {"connection": "Username-Password-Authentication", "email": "new@example.com",
         "password": "s3cret-pässword"}
    )  # fmt: skip
    form = {**PASSWORD_GRANT, "username": "new@example.com", "password": "s3cret-pässword"}
    body = (await http.post("/oauth/token", data=form)).json()
    claims = verified(emulator, body["access_token"], DEV_AUDIENCE)
    assert (claims["sub"], claims["permissions"]) == (user["user_id"], [])


@pytest.mark.parametrize(
    ("changes", "status", "error", "description"),
    [
        ({"password": "wrong"}, 403, "invalid_grant", "Wrong email or password."),
        ({"username": "nobody@example.com"}, 403, "invalid_grant", "Wrong email or password."),
        # A seed user without a password cannot log in with one.
        ({"username": "alan.turing@gmail.com"}, 403, "invalid_grant", "Wrong email or password."),
        ({"password": ""}, 400, "invalid_request", "Missing required parameter: password"),
        ({"username": None}, 400, "invalid_request", "Missing required parameter: username"),
        ({"client_secret": "nope"}, 401, "access_denied", "Unauthorized"),
    ],
)
async def test_password_grant_errors(
    http: httpx.AsyncClient, changes: dict[str, Any], status: int, error: str, description: str
) -> None:
    form = {k: v for k, v in {**PASSWORD_GRANT, **changes}.items() if v is not None}
    response = await http.post("/oauth/token", data=form)
    assert response.status_code == status
    assert response.json() == {"error": error, "error_description": description}


async def test_blocked_users_cannot_log_in(emulator: Emulator, http: httpx.AsyncClient) -> None:
    emulator.users[ADA]["blocked"] = True
    response = await http.post("/oauth/token", data=PASSWORD_GRANT)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "error_description": "user is blocked"}


@pytest.mark.parametrize(
    ("changes", "status", "error", "description"),
    [
        ({"client_secret": "wrong"}, 401, "access_denied", "Unauthorized"),
        ({"client_id": "someone-else"}, 401, "access_denied", "Unauthorized"),
        ({"client_id": None, "client_secret": None}, 401, "access_denied", "Unauthorized"),
        (
            {"audience": "https://unknown.api/"},
            403,
            "access_denied",
            "Service not found: https://unknown.api/",
        ),
        (
            {"audience": None},
            403,
            "access_denied",
            "No audience parameter was provided, and no default audience has been configured",
        ),
        ({"grant_type": None}, 400, "invalid_request", "Missing required parameter: grant_type"),
        (
            {"grant_type": "authorization_code"},
            403,
            "unsupported_grant_type",
            "Unsupported grant type: authorization_code",
        ),
    ],
)
async def test_client_credentials_errors(
    http: httpx.AsyncClient, changes: dict[str, Any], status: int, error: str, description: str
) -> None:
    form = {k: v for k, v in {**CREDENTIALS, **changes}.items() if v is not None}
    response = await http.post("/oauth/token", data=form)
    assert response.status_code == status
    assert response.json() == {"error": error, "error_description": description}


async def test_malformed_bodies_are_invalid_request(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/oauth/token", content=b"[1, 2]", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    response = await http.post(
        "/oauth/token", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


async def test_configured_clients_and_audiences() -> None:
    emulator = make_emulator(clients={"other": "pw"}, api_audiences=["https://a", "https://b"])
    async with client_for(emulator) as client:
        form = {**CREDENTIALS, "client_id": "other", "client_secret": "pw", "audience": "https://b"}
        response = await client.post("/oauth/token", data=form)
        assert response.status_code == 200
        denied = await client.post("/oauth/token", data=CREDENTIALS)
        assert denied.status_code == 401
