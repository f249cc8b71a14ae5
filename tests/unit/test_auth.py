"""Access-token verification against the emulator's real keys, in process."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm
from userapi.adapters.access_tokens import (
    InvalidToken,
    JWKSUnavailable,
    KeySet,
    Principal,
    TokenVerifier,
    _parse_jwks,
    authenticate,
)
from userapi.adapters.shared_store import MemoryStore
from userapi.emulator import Emulator, EmulatorConfig
from userapi.platform.errors import APIError
from userapi.platform.settings import Settings

from tests.support import tokens

BASE = "http://auth0.test"
AUDIENCE = "https://userapi.local/api"
USER = "auth0|64f1c2a9e4b0a1b2c3d4e5f6"
JWKS_ROUTE = "GET /.well-known/jwks.json"

pytestmark = pytest.mark.anyio


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(EmulatorConfig(base_url=BASE, api_audiences=[AUDIENCE]))


@pytest.fixture
async def http(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=emulator.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        yield client


def settings_for(**overrides: Any) -> Settings:
    """What the verifier is given in these tests: the emulator's tenant, no clock leeway."""
    values: dict[str, Any] = {
        "auth0_domain": BASE,
        "auth0_allow_insecure_http": True,  # the in-process emulator speaks http
        "auth0_audience": AUDIENCE,
        "jwt_leeway_seconds": 0,
        "jwks_cache_seconds": 600,
        "jwks_refetch_cooldown_seconds": 30,
    }
    return Settings(**{**values, **overrides})


def make_verifier(
    http: httpx.AsyncClient, cooldown: float = 30.0, store: MemoryStore | None = None
) -> TokenVerifier:
    settings = settings_for(jwks_refetch_cooldown_seconds=cooldown)
    return TokenVerifier(settings, KeySet(settings, lambda: http, store))


async def test_a_valid_token_yields_subject_and_permissions(emulator, http) -> None:
    token = emulator.mint_access_token(
        USER, audience=AUDIENCE, permissions=["read:users"], scope="openid update:users"
    )
    principal = await make_verifier(http).verify(token)
    assert principal.subject == USER
    assert principal.permissions == {"read:users"}  # the scope a login asked for grants nothing


ALL_PERMISSIONS = "read:users create:users update:users delete:users"


@pytest.mark.parametrize(
    "overrides",
    [
        # A login to an API without RBAC (Auth0's default): the scope holds what was asked.
        {"scope": "openid " + ALL_PERMISSIONS},
        {"scope": ALL_PERMISSIONS, "permissions": []},
        # Half of an application's marks is still a user.
        {"scope": ALL_PERMISSIONS, "gty": "client-credentials"},
        {"scope": ALL_PERMISSIONS, "sub": "attacker@clients"},
        {"scope": ALL_PERMISSIONS, "gty": "password", "sub": "attacker@clients"},
        {"scope": ALL_PERMISSIONS, "gty": "client-credentials", "sub": "attacker@clients"},
        # A user id may end in @clients; it is never the client id that azp names.
        {
            "scope": ALL_PERMISSIONS,
            "gty": "client-credentials",
            "sub": "auth0|x@clients",
            "azp": "userapi-m2m",
        },
    ],
)
async def test_a_user_tokens_scope_grants_no_permission(emulator, http, overrides) -> None:
    overrides = dict(overrides)
    claims = tokens.claims(emulator, AUDIENCE, overrides.pop("sub", USER), **overrides)
    if "permissions" not in overrides:
        del claims["permissions"]
    principal = await make_verifier(http).verify(emulator.sign(claims))
    assert principal.permissions == frozenset()


@pytest.mark.parametrize("permissions", ["read:users", {"read:users": True}, [1, None]])
async def test_a_malformed_permissions_claim_grants_nothing_it_does_not_list(
    emulator, http, permissions
) -> None:
    claims = tokens.claims(emulator, AUDIENCE, USER, permissions=permissions, scope=ALL_PERMISSIONS)
    principal = await make_verifier(http).verify(emulator.sign(claims))
    assert principal.permissions == frozenset()


async def test_an_application_token_is_authorized_by_its_scope(emulator, http) -> None:
    response = await http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "userapi-m2m",
            "client_secret": "userapi-dev-secret",
            "audience": AUDIENCE,
            "scope": "read:users delete:users",
        },
    )
    principal = await make_verifier(http).verify(response.json()["access_token"])
    assert principal.subject == "userapi-m2m@clients"
    assert principal.permissions == {"read:users", "delete:users"}
    # Without RBAC the token has no permissions claim: its scope still holds.
    emulator.rbac = False
    response = await http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "userapi-m2m",
            "client_secret": "userapi-dev-secret",
            "audience": AUDIENCE,
        },
    )
    principal = await make_verifier(http).verify(response.json()["access_token"])
    assert principal.permissions == set(ALL_PERMISSIONS.split())


async def test_audience_may_be_a_plain_string(emulator, http) -> None:
    token = emulator.sign(tokens.claims(emulator, AUDIENCE, USER, aud=AUDIENCE))
    assert (await make_verifier(http).verify(token)).subject == USER


def _public_pem(emulator: Emulator) -> tuple[bytes, str]:
    jwk = emulator_jwks(emulator)[0]
    key = RSAAlgorithm.from_jwk(jwk)
    pem = key.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, jwk["kid"]


def emulator_jwks(emulator: Emulator) -> list[dict[str, str]]:
    return emulator.keys.jwks()["keys"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "case",
    [
        "alg_none",
        "hs256_public_key",
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "issuer_without_slash",
        "unknown_kid",
        "bad_signature",
        "tampered_claims",
        "no_exp",
        "garbage",
    ],
)
async def test_bad_tokens_are_rejected(emulator, http, case: str) -> None:
    good = tokens.claims(emulator, AUDIENCE, USER, permissions=["read:users"])
    token = {  # type: ignore[no-untyped-call]
        "alg_none": lambda: tokens.alg_none(good),
        "hs256_public_key": lambda: tokens.hs256_with_public_key(good, *_public_pem(emulator)),
        "expired": lambda: emulator.sign({**good, "exp": int(time.time()) - 5}),
        "wrong_audience": lambda: emulator.sign({**good, "aud": "https://other.api"}),
        "wrong_issuer": lambda: emulator.sign({**good, "iss": "https://evil.example/"}),
        "issuer_without_slash": lambda: emulator.sign({**good, "iss": BASE}),
        "unknown_kid": lambda: emulator.sign(good, headers={"kid": "not-a-key"}),
        "bad_signature": lambda: tokens.tamper_signature(emulator.sign(good)),
        "tampered_claims": lambda: tokens.tamper_payload(emulator.sign(good), sub="auth0|admin"),
        "no_exp": lambda: emulator.sign({k: v for k, v in good.items() if k != "exp"}),
        "garbage": lambda: "not.a.jwt",
    }[case]()
    with pytest.raises(InvalidToken):
        await make_verifier(http).verify(token)


async def test_many_requests_on_a_cold_process_fetch_the_jwks_once(emulator, http) -> None:
    verifier = make_verifier(http)
    token = emulator.mint_access_token(USER, audience=AUDIENCE)
    emulator.reset_stats()
    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(verifier.verify, token)
    assert emulator.stats().get(JWKS_ROUTE) == 1


class _SlowNetwork(httpx.AsyncBaseTransport):
    """The emulator 50 ms away: in process, a fetch would otherwise finish before the next
    request starts, and nothing would ever queue behind it."""

    def __init__(self, app: Any) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.05)
        return await self._inner.handle_async_request(request)


async def test_requests_queued_behind_a_failed_jwks_fetch_share_its_failure(emulator) -> None:
    http = httpx.AsyncClient(transport=_SlowNetwork(emulator.app), base_url=BASE)
    verifier = make_verifier(http)
    token = emulator.mint_access_token(USER, audience=AUDIENCE)
    emulator.add_fault(JWKS_ROUTE, status=503, times=None)
    emulator.reset_stats()
    failures: list[Exception] = []

    async def verify() -> None:
        try:
            await verifier.verify(token)
        except JWKSUnavailable as exc:
            failures.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(verify)
    assert len(failures) == 20
    assert emulator.stats().get(JWKS_ROUTE) == 1  # not one fetch each, one after another
    emulator.clear_faults()
    assert (await verifier.verify(token)).subject == USER  # the next request tries again
    await http.aclose()


def test_a_malformed_key_in_the_jwks_costs_only_itself(emulator) -> None:
    good = emulator.keys.jwks()["keys"][0]
    broken = {"kty": "RSA", "kid": "broken", "use": "sig", "n": "!!", "e": "AQAB"}
    assert set(_parse_jwks({"keys": [broken, good]})) == {good["kid"]}


async def test_unknown_kids_refetch_at_most_once_per_cooldown(emulator, http) -> None:
    verifier = make_verifier(http, cooldown=0.2)
    await verifier.verify(emulator.mint_access_token(USER, audience=AUDIENCE))
    good = tokens.claims(emulator, AUDIENCE, USER)
    with pytest.raises(InvalidToken):  # within the cooldown of the first fetch: no refetch
        await verifier.verify(emulator.sign(good, headers={"kid": "forged"}))
    assert emulator.stats().get(JWKS_ROUTE) == 1
    await anyio.sleep(0.25)
    emulator.reset_stats()
    for i in range(5):
        with pytest.raises(InvalidToken):
            await verifier.verify(emulator.sign(good, headers={"kid": f"forged-{i}"}))
    assert emulator.stats().get(JWKS_ROUTE) == 1


async def test_a_rotated_key_is_picked_up_by_refetching(emulator, http) -> None:
    verifier = make_verifier(http, cooldown=0.0)
    await verifier.verify(emulator.mint_access_token(USER, audience=AUDIENCE))
    emulator.rotate_keys()
    rotated = emulator.mint_access_token(USER, audience=AUDIENCE)
    assert (await verifier.verify(rotated)).subject == USER


async def test_a_cold_process_takes_the_jwks_another_process_shared(emulator, http) -> None:
    store = MemoryStore(100)  # stands in for Redis: one instance seen by both "processes"
    token = emulator.mint_access_token(USER, audience=AUDIENCE)
    emulator.reset_stats()
    await make_verifier(http, store=store).verify(token)
    assert (await make_verifier(http, store=store).verify(token)).subject == USER
    assert emulator.stats().get(JWKS_ROUTE) == 1


async def test_a_key_missing_from_the_shared_jwks_is_fetched_and_shared(emulator, http) -> None:
    store = MemoryStore(100)
    await make_verifier(http, store=store).verify(
        emulator.mint_access_token(USER, audience=AUDIENCE)
    )
    emulator.rotate_keys()
    rotated = emulator.mint_access_token(USER, audience=AUDIENCE)
    emulator.reset_stats()
    assert (await make_verifier(http, store=store).verify(rotated)).subject == USER
    assert (await make_verifier(http, store=store).verify(rotated)).subject == USER
    assert emulator.stats().get(JWKS_ROUTE) == 1


@pytest.mark.parametrize(
    "planted", [b"not json", b'{"keys": [{"kty": "RSA", "kid": "k", "n": 1}]}']
)
async def test_an_unreadable_shared_jwks_falls_back_to_auth0(emulator, http, planted) -> None:
    store = MemoryStore(100)
    await store.set("userapi:jwks:v1", planted, 600)  # the default REDIS_KEY_PREFIX
    emulator.reset_stats()
    token = emulator.mint_access_token(USER, audience=AUDIENCE)
    assert (await make_verifier(http, store=store).verify(token)).subject == USER
    assert emulator.stats().get(JWKS_ROUTE) == 1


class _CountingVerifier(TokenVerifier):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.signature_checks = 0

    async def _verify(self, token: str) -> Principal:
        self.signature_checks += 1
        return await super()._verify(token)


def counting_verifier(http: httpx.AsyncClient) -> _CountingVerifier:
    settings = settings_for()
    return _CountingVerifier(settings, KeySet(settings, lambda: http))


async def test_a_verified_token_is_not_checked_again(emulator, http) -> None:
    verifier = counting_verifier(http)
    token = emulator.mint_access_token(USER, audience=AUDIENCE, permissions=["read:users"])
    first = await verifier.verify(token)
    again = await verifier.verify(token)
    assert again == first
    assert verifier.signature_checks == 1


async def test_the_memo_only_serves_byte_identical_tokens(emulator, http) -> None:
    verifier = counting_verifier(http)
    good = tokens.claims(emulator, AUDIENCE, USER)
    token = emulator.sign(good)
    await verifier.verify(token)
    for forged in (tokens.tamper_signature(token), tokens.tamper_payload(token, sub="x|admin")):
        with pytest.raises(InvalidToken):
            await verifier.verify(forged)
    assert verifier.signature_checks == 3


async def test_a_remembered_token_still_expires(emulator, http) -> None:
    verifier = counting_verifier(http)
    token = emulator.sign(tokens.claims(emulator, AUDIENCE, USER, exp=int(time.time()) + 2))
    await verifier.verify(token)
    await anyio.sleep(2.1)
    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_the_memo_is_bounded(emulator, http, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TokenVerifier, "VERIFIED_MAX_ENTRIES", 2)
    verifier = counting_verifier(http)
    minted = [emulator.mint_access_token(f"auth0|{i}", audience=AUDIENCE) for i in range(3)]
    for token in minted:
        await verifier.verify(token)
    await verifier.verify(minted[0])  # evicted as the oldest: checked again
    await verifier.verify(minted[2])  # still remembered
    assert verifier.signature_checks == 4


@pytest.mark.parametrize(
    ("header", "message"),
    [(None, "required"), ("Basic dXNlcjpwdw==", "Bearer"), ("Bearer ", "Bearer")],
)
async def test_authenticate_answers_401_with_www_authenticate(http, header, message) -> None:
    with pytest.raises(APIError) as raised:
        await authenticate(make_verifier(http), header)
    assert raised.value.status == 401
    assert raised.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert message in raised.value.message


async def test_the_shared_jwks_is_kept_under_the_installation_key_prefix(emulator, http) -> None:
    store = MemoryStore(100)
    token = emulator.mint_access_token(USER, audience=AUDIENCE)
    settings = settings_for(redis_key_prefix="tenant-a:")
    verifier = TokenVerifier(settings, KeySet(settings, lambda: http, store))
    assert (await verifier.verify(token)).subject == USER
    assert await store.get("tenant-a:jwks:v1") is not None
    assert await store.get("userapi:jwks:v1") is None
