"""Access-token verification: RS256 only, exact issuer, audience and expiry; non-blocking JWKS.

PyJWT's PyJWKClient fetches with blocking urllib and refetches on every unknown kid, so the key
set is kept here: fetched once per process however many requests arrive together, cached, and
refetched on an unknown kid at most once per cooldown (Auth0 rotates keys; a flood of forged
kids must not turn into a flood of JWKS requests).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt
from jwt.algorithms import RSAAlgorithm

from userapi.adapters.shared_store import SharedStore
from userapi.platform import telemetry
from userapi.platform.errors import APIError, UpstreamError, unauthorized
from userapi.platform.settings import Settings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("userapi.auth")

ALGORITHMS = ["RS256"]
JWKS_OPERATION = "GET /.well-known/jwks.json"  # its Auth0 span and metric


class Permission(enum.StrEnum):
    """The Auth0 API permissions (RBAC) the endpoints check, as tokens carry them."""

    READ_USERS = "read:users"
    CREATE_USERS = "create:users"
    UPDATE_USERS = "update:users"
    DELETE_USERS = "delete:users"


@dataclass(frozen=True)
class Principal:
    subject: str
    permissions: frozenset[str]
    claims: dict[str, Any]


class InvalidToken(Exception):
    pass


class JWKSUnavailable(UpstreamError):
    def to_api_error(self) -> APIError:
        return APIError(502, "auth0_unavailable", "Auth0's signing keys could not be fetched.")


class KeySet:
    """The tenant's signing keys, shared by every pod through the store (Redis).

    A cold pod takes the JWKS another pod already fetched instead of calling Auth0: one round
    trip to Redis instead of a TLS handshake and a request to the tenant before its first
    answer. A kid the shared copy lacks (Auth0 rotated its key) sends the pod to Auth0, which
    refreshes the shared copy for the others. In Redis the copy is sealed with SHARED_CACHE_KEY
    (adapters/sealed_store.py, which `store` is then): a key set planted by whoever can write
    to Redis reads as a miss, never as keys.
    """

    def __init__(
        self,
        settings: Settings,
        http: Callable[[], httpx.AsyncClient],
        store: SharedStore | None = None,
    ) -> None:
        self._http = http
        self._url = f"{settings.auth0_base_url}/.well-known/jwks.json"
        self._cache_seconds = settings.jwks_cache_seconds
        self._cooldown = settings.jwks_refetch_cooldown_seconds
        self._store = store
        # Under REDIS_KEY_PREFIX like every other key: installations sharing one Redis (other
        # tenants, other keys) must not share a JWKS.
        self.store_key = f"{settings.redis_key_prefix}jwks:v1"
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        # Bumped by each fetch that failed with no keys to fall back on: requests that queued
        # behind it share its failure instead of each trying (and timing out) in turn.
        self._failures = 0
        self._last_failure = ""

    async def key_for(self, kid: str) -> Any:
        now = time.monotonic()
        if kid in self._keys and now - self._fetched_at < self._cache_seconds:
            return self._keys[kid]
        stale = now - self._fetched_at >= self._cache_seconds
        await self._refresh(kid, force=stale)
        key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("The token was signed by an unknown key.")
        return key

    async def _refresh(self, kid: str, *, force: bool) -> None:
        fetched_before, failures_before = self._fetched_at, self._failures
        async with self._lock:
            if self._fetched_at != fetched_before:
                return  # another request refreshed while we waited: one fetch serves all
            if self._failures != failures_before:
                raise JWKSUnavailable(self._last_failure)  # as did its failure
            if not force and time.monotonic() - self._fetched_at < self._cooldown:
                return
            shared = await self._from_store()
            if shared and kid in shared:
                self._keys = shared
                self._fetched_at = time.monotonic()
                return
            import httpx  # here: a pod that finds the JWKS in Redis never needs it

            try:
                with telemetry.operation("auth0", JWKS_OPERATION) as fetch:
                    response = await self._http().get(self._url)
                    fetch.set("http.response.status_code", response.status_code)
                    response.raise_for_status()
                    keys = _parse_jwks(response.json())
                    fetch.outcome("ok")
            except (httpx.HTTPError, ValueError) as exc:
                if self._keys:
                    log.warning(
                        "JWKS refresh failed, keeping cached keys", extra={"error": repr(exc)}
                    )
                    self._fetched_at = time.monotonic() - self._cache_seconds + self._cooldown
                    return
                self._failures += 1
                self._last_failure = str(exc)
                raise JWKSUnavailable(str(exc)) from exc
            self._keys = keys
            self._fetched_at = time.monotonic()
            if self._store is not None and keys:
                await self._store.set(self.store_key, response.content, self._cache_seconds)

    async def _from_store(self) -> dict[str, Any]:
        if self._store is None:
            return {}
        raw = await self._store.get(self.store_key)
        if raw is None:
            return {}
        try:
            return _parse_jwks(json.loads(raw))
        except Exception as exc:  # a corrupt shared copy must cost a fetch, never a request
            log.warning("ignoring an unreadable shared JWKS", extra={"error": repr(exc)})
            return {}


def _parse_jwks(document: Any) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for jwk in document.get("keys", []) if isinstance(document, dict) else []:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or "kid" not in jwk:
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
            continue
        try:
            keys[str(jwk["kid"])] = RSAAlgorithm.from_jwk(jwk)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            # One malformed key must not cost the valid ones beside it (nor answer a 500).
            log.warning("skipping an unreadable JWK", extra={"kid": jwk["kid"], "error": repr(exc)})
    return keys


class TokenVerifier:
    """Verifies access tokens, and remembers the ones it verified until they expire.

    A client sends the same token with every request for its lifetime, and the RS256 check is
    most of the CPU a cached read costs. The memo is keyed by the whole token, signature
    included, so only a byte-identical token hits it; `exp` is still checked on every use, and
    an entry lives at most VERIFIED_TTL_SECONDS, about as long as a rotated-out signing key
    stays in Auth0's JWKS.
    """

    VERIFIED_MAX_ENTRIES = 4096
    VERIFIED_TTL_SECONDS = 300.0

    def __init__(self, settings: Settings, keys: KeySet) -> None:
        self._keys = keys
        self._issuer = settings.issuer
        self._audience = settings.auth0_audience
        self._leeway = settings.jwt_leeway_seconds
        # token -> (principal, valid until, in epoch seconds)
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        memo = self._verified.get(token)
        if memo is not None:
            principal, valid_until = memo
            if time.time() < valid_until:
                # No span: the remembered answer takes a dict lookup, and is the request's
                # attribute instead (telemetry.annotate).
                telemetry.annotate("userapi.auth.outcome", "memoized")
                return principal
            del self._verified[token]
        with telemetry.span("userapi.auth.verify") as span:
            span.outcome("verified")
            return await self._verify_and_remember(token)

    async def _verify_and_remember(self, token: str) -> Principal:
        principal = await self._verify(token)
        exp = principal.claims["exp"]
        if isinstance(exp, int | float):
            self._verified[token] = (
                principal,
                min(exp + self._leeway, time.time() + self.VERIFIED_TTL_SECONDS),
            )
            if len(self._verified) > self.VERIFIED_MAX_ENTRIES:
                self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("The token is malformed.") from exc
        # Checked before any key lookup: alg "none" or HS256 signed with the public key must
        # never reach a verifier that might accept them.
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("The token's algorithm is not allowed.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("The token has no key id.")
        key = await self._keys.key_for(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("The token has expired.") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("The token is not meant for this API.") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("The token was issued by another tenant.") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("The token is invalid.") from exc
        return Principal(str(claims["sub"]), _permissions(claims), claims)


def _permissions(claims: dict[str, Any]) -> frozenset[str]:
    """What the token may do: a user's `permissions` claim, an application's `scope`.

    A user token's `scope` is whatever the login asked for unless the API enforces RBAC (off
    by default on a new Auth0 API), so it never grants anything: only the `permissions` claim
    ("Add Permissions in the Access Token") lists what Auth0 assigned. A client-credentials
    token's scope is bounded by its client grant, so there it is the grant.
    """
    if _is_application(claims):
        scope = claims.get("scope")
        return frozenset(scope.split()) if isinstance(scope, str) else frozenset()
    permissions = claims.get("permissions")
    if not isinstance(permissions, list):
        return frozenset()
    return frozenset(p for p in permissions if isinstance(p, str))


def _is_application(claims: dict[str, Any]) -> bool:
    # Every mark of Auth0's client-credentials grant: the grant type, and the subject that is
    # the authorized party's client id + "@clients". A user id may end in "@clients" too (a
    # database connection's "auth0|x@clients"), but is never the client id of azp.
    client_id = claims.get("azp")
    return (
        claims.get("gty") == "client-credentials"
        and isinstance(client_id, str)
        and bool(client_id)
        and claims.get("sub") == f"{client_id}@clients"
    )


async def authenticate(verifier: TokenVerifier, authorization: str | None) -> Principal:
    if not authorization:
        raise unauthorized("An access token is required (Authorization: Bearer <token>).")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("The Authorization header must be 'Bearer <token>'.")
    try:
        return await verifier.verify(token.strip())
    except InvalidToken as exc:
        raise unauthorized(str(exc)) from exc
