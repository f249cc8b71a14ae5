"""POST /oauth/token: client credentials and Resource Owner Password grants, Auth0-style.

Errors use the OAuth 2.0 shape `{"error", "error_description"}` with Auth0's status codes:
bad client credentials 401 access_denied "Unauthorized", an unknown audience 403
access_denied "Service not found: <aud>", a wrong password 403 invalid_grant.

Scopes as Auth0 grants them: a client-credentials token gets what its client grant allows (all
of it when it asks for none); a user token's scope depends on the API's RBAC setting
(`Emulator.rbac`): on, the requested permissions the user was assigned, plus a `permissions`
claim listing all assigned ones; off, every requested permission and no `permissions` claim.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from userapi.emulator.errors import oauth_error
from userapi.emulator.users import now_iso

if TYPE_CHECKING:
    from userapi.emulator.app import Emulator

MANAGEMENT_SCOPES = ("read:users", "update:users", "delete:users", "create:users")
NO_AUDIENCE = "No audience parameter was provided, and no default audience has been configured"
# Scopes of the login itself, not permissions of an API: RBAC leaves them in a user's scope.
OIDC_SCOPES = frozenset({"openid", "profile", "email", "address", "phone", "offline_access"})
_OPENID_CLAIMS = ("name", "nickname", "picture", "email", "email_verified", "updated_at")


def _same(expected: str, given: str) -> bool:
    # Bytes: compare_digest refuses non-ASCII str, and passwords may be any text.
    return secrets.compare_digest(expected.encode(), given.encode())


async def _params(request: Request) -> dict[str, str] | None:
    try:
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.json()
            if not isinstance(body, dict):
                return None
            params = {str(k): str(v) for k, v in body.items() if v is not None}
        else:
            # Parsed here: Starlette's form parser needs python-multipart, and Auth0 takes only
            # application/x-www-form-urlencoded or JSON.
            text = (await request.body()).decode()
            params = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text)))
    except (ValueError, UnicodeDecodeError):
        return None
    # client_secret_basic: Auth0 also takes the client's credentials from HTTP Basic auth.
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        params.setdefault("client_id", unquote_plus(client_id))
        params.setdefault("client_secret", unquote_plus(client_secret))
    return params


def _token_body(emulator: Emulator, claims: dict[str, Any], expires_in: int) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": emulator.issuer, **claims, "iat": now, "exp": now + expires_in}
    body: dict[str, Any] = {
        "access_token": emulator.sign(claims),
        "token_type": "Bearer",
        "expires_in": expires_in,
    }
    if claims.get("scope"):
        body["scope"] = claims["scope"]
    return body


def _respond(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def token_endpoint(emulator: Emulator, request: Request) -> Response:
    params = await _params(request)
    if params is None:
        return oauth_error(400, "invalid_request", "Malformed request body.")
    grant = params.get("grant_type")
    if not grant:
        return oauth_error(400, "invalid_request", "Missing required parameter: grant_type")
    if grant not in ("client_credentials", "password"):
        return oauth_error(403, "unsupported_grant_type", f"Unsupported grant type: {grant}")
    client_id = params.get("client_id", "")
    known_secret = emulator.config.clients.get(client_id)
    given_secret = params.get("client_secret", "")
    if known_secret is None or not _same(known_secret, given_secret):
        return oauth_error(401, "access_denied", "Unauthorized")
    audience = params.get("audience", "")
    if not audience:
        return oauth_error(403, "access_denied", NO_AUDIENCE)
    if audience != emulator.management_audience and audience not in emulator.config.api_audiences:
        return oauth_error(403, "access_denied", f"Service not found: {audience}")
    requested = params.get("scope", "").split()
    if grant == "client_credentials":
        return _client_credentials(emulator, client_id, audience, requested)
    return _password(emulator, params, client_id, audience, requested)


def _client_credentials(
    emulator: Emulator, client_id: str, audience: str, requested: list[str]
) -> Response:
    claims: dict[str, Any] = {
        "sub": f"{client_id}@clients",
        "aud": audience,
        "azp": client_id,
        "gty": "client-credentials",
    }
    if audience == emulator.management_audience:
        granted: list[str] = list(MANAGEMENT_SCOPES)
        expires_in = emulator.config.token_expires_in
    else:
        granted = list(emulator.config.api_permissions)
        expires_in = emulator.config.access_token_expires_in
    # The client grant bounds the scope whatever RBAC says; asking for more is refused, and
    # asking for nothing gets all of it, as with Auth0.
    refused = [scope for scope in requested if scope not in granted]
    if refused:
        description = f"Client has not been granted scopes: {', '.join(refused)}"
        return oauth_error(403, "access_denied", description)
    scopes = requested or granted
    claims["scope"] = " ".join(scopes)
    # "Add Permissions in the Access Token" puts the grant in M2M tokens for the API too; the
    # Management API's tokens carry scopes only.
    if audience != emulator.management_audience and emulator.rbac:
        claims["permissions"] = scopes
    return _respond(_token_body(emulator, claims, expires_in))


def _password(
    emulator: Emulator, params: dict[str, str], client_id: str, audience: str, requested: list[str]
) -> Response:
    for name in ("username", "password"):
        if not params.get(name):
            return oauth_error(400, "invalid_request", f"Missing required parameter: {name}")
    if audience == emulator.management_audience:
        return oauth_error(403, "access_denied", "The Management API does not accept user tokens.")
    store = emulator.store
    given = params["password"]
    user = next(
        (
            u
            for u in store.login_candidates(params["username"])
            if (stored := store.passwords.get(u["user_id"])) is not None and _same(stored, given)
        ),
        None,
    )
    if user is None:
        return oauth_error(403, "invalid_grant", "Wrong email or password.")
    if user.get("blocked") is True:
        return oauth_error(401, "unauthorized", "user is blocked")
    user["last_login"] = now_iso()
    user["logins_count"] = int(user.get("logins_count") or 0) + 1
    assigned = list(store.permissions.get(user["user_id"], []))
    if emulator.rbac:
        # RBAC: the scope is what was asked for AND assigned; the permissions claim, all
        # that is assigned, however little was asked for.
        scope = " ".join(s for s in requested if s in OIDC_SCOPES or s in assigned)
    else:
        # Without RBAC: any permission the API defines, for anyone who asks.
        defined = emulator.config.api_permissions
        scope = " ".join(s for s in requested if s in OIDC_SCOPES or s in defined)
    userinfo = emulator.config.base_url + "/userinfo"
    claims: dict[str, Any] = {
        "sub": user["user_id"],
        # Auth0 adds its /userinfo audience when the user token is also good for OIDC.
        "aud": [audience, userinfo] if "openid" in requested else audience,
        "azp": client_id,
        "scope": scope,
    }
    if emulator.rbac:
        claims["permissions"] = assigned
    body = _token_body(emulator, claims, emulator.config.access_token_expires_in)
    if "openid" in requested:
        now = int(time.time())
        id_claims = {
            "iss": emulator.issuer, "sub": user["user_id"], "aud": client_id,
            "iat": now, "exp": now + 36000,
            **{k: user[k] for k in _OPENID_CLAIMS if k in user},
        }  # fmt: skip
        body["id_token"] = emulator.sign(id_claims)
    return _respond(body)
