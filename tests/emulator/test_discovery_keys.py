"""OIDC discovery, the JWKS, tokens verifying against it, and key rotation."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from userapi.emulator import DEV_AUDIENCE, Emulator, EmulatorConfig

from tests.support.emulator import ADA, BASE_URL, management_token, user_path

pytestmark = pytest.mark.anyio


def verify(token: str, jwks: dict[str, Any], audience: str = DEV_AUDIENCE) -> dict[str, Any]:
    """What a resource server does: pick the JWK by kid, pin RS256, check iss/aud/exp."""
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(jwk).key,
        algorithms=["RS256"],
        audience=audience,
        issuer=BASE_URL + "/",
        options={"require": ["exp", "iat", "sub"]},
    )
    return claims


async def test_discovery_points_at_the_jwks_and_token_endpoint(http: httpx.AsyncClient) -> None:
    response = await http.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    body = response.json()
    assert body["issuer"] == "http://auth0.test/"  # trailing slash, exactly like Auth0
    assert body["jwks_uri"] == "http://auth0.test/.well-known/jwks.json"
    assert body["token_endpoint"] == "http://auth0.test/oauth/token"
    assert "RS256" in body["id_token_signing_alg_values_supported"]


def test_a_trailing_slash_in_base_url_does_not_double_the_issuer_slash() -> None:
    emulator = Emulator(EmulatorConfig(base_url="http://h:1/"))
    assert emulator.issuer == "http://h:1/"
    assert emulator.management_audience == "http://h:1/api/v2/"


async def test_jwks_publishes_one_rs256_signing_key(http: httpx.AsyncClient) -> None:
    response = await http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert {key["kty"], key["use"], key["alg"]} == {"RSA", "sig", "RS256"}
    assert key["kid"]
    assert key["n"]
    assert key["e"] == "AQAB"
    assert "d" not in key
    assert "p" not in key


async def test_jwks_certificate_matches_the_key_and_thumbprint(http: httpx.AsyncClient) -> None:
    (key,) = (await http.get("/.well-known/jwks.json")).json()["keys"]
    der = base64.b64decode(key["x5c"][0])
    certificate = x509.load_der_x509_certificate(der)
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    numbers = public_key.public_numbers()
    n = int.from_bytes(base64.urlsafe_b64decode(key["n"] + "=" * (-len(key["n"]) % 4)), "big")
    assert numbers.n == n
    sha1 = hashlib.sha1(der, usedforsecurity=False).digest()
    assert key["x5t"] == base64.urlsafe_b64encode(sha1).rstrip(b"=").decode()


async def test_minted_token_verifies_against_the_published_jwks(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    token = emulator.mint_access_token(
        "auth0|abc", permissions=["read:users"], extra_claims={"org_id": "org_1"}
    )
    claims = verify(token, (await http.get("/.well-known/jwks.json")).json())
    assert claims["sub"] == "auth0|abc"
    assert claims["aud"] == [DEV_AUDIENCE, "http://auth0.test/userinfo"]
    assert claims["permissions"] == ["read:users"]
    assert claims["org_id"] == "org_1"
    assert claims["azp"] == "userapi-m2m"
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 5
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["typ"] == "JWT"


async def test_mint_access_token_options(emulator: Emulator, http: httpx.AsyncClient) -> None:
    token = emulator.mint_access_token(
        "auth0|abc", audience="https://other.api", scope="read:things", expires_in=60
    )
    claims = verify(token, (await http.get("/.well-known/jwks.json")).json(), "https://other.api")
    assert claims["scope"] == "read:things"
    assert claims["permissions"] == []
    assert claims["exp"] - claims["iat"] == 60


async def test_sign_uses_given_claims_and_headers(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    token = emulator.sign({"sub": "x", "exp": 1}, headers={"kid": "someone-else"})
    assert jwt.get_unverified_header(token)["kid"] == "someone-else"
    assert jwt.decode(token, options={"verify_signature": False}) == {"sub": "x", "exp": 1}
    jwks = (await http.get("/.well-known/jwks.json")).json()
    with pytest.raises(StopIteration):  # no such kid published
        verify(token, jwks)


async def test_rotation_publishes_two_keys_then_drops_the_oldest(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    first = emulator.mint_access_token("auth0|abc")
    first_kid = jwt.get_unverified_header(first)["kid"]

    emulator.rotate_keys()
    jwks = (await http.get("/.well-known/jwks.json")).json()
    kids = [k["kid"] for k in jwks["keys"]]
    assert len(kids) == 2
    assert kids[0] == first_kid
    second = emulator.mint_access_token("auth0|abc")
    assert jwt.get_unverified_header(second)["kid"] == kids[1] != first_kid
    assert verify(first, jwks)["sub"] == "auth0|abc"  # old-kid tokens still verify
    assert verify(second, jwks)["sub"] == "auth0|abc"

    response = await http.post("/__emulator/rotate-keys")
    assert response.status_code == 200
    jwks = (await http.get("/.well-known/jwks.json")).json()
    kids_now = [k["kid"] for k in jwks["keys"]]
    assert kids_now[0] == kids[1]
    assert first_kid not in kids_now
    assert response.json()["kid"] == kids_now[1]
    with pytest.raises(StopIteration):
        verify(first, jwks)  # rotated out


async def test_management_api_rejects_tokens_of_a_rotated_out_key(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    token = await management_token(http)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await http.get(user_path(ADA), headers=headers)).is_success
    emulator.rotate_keys()
    response = await http.get(user_path(ADA), headers=headers)
    assert response.status_code == 200  # the previous key is still trusted
    emulator.rotate_keys()
    response = await http.get(user_path(ADA), headers=headers)
    assert response.status_code == 401
