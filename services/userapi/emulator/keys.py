"""RS256 signing keys with rotation, published as a JWKS the way Auth0 does."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _self_signed(private_key: rsa.RSAPrivateKey, common_name: str) -> bytes:
    """A DER certificate for x5c: Auth0 publishes one per key, some verifiers read it."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .sign(private_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    certificate: bytes = field(repr=False)

    @classmethod
    def generate(cls, common_name: str) -> SigningKey:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(secrets.token_urlsafe(16), private_key, _self_signed(private_key, common_name))

    def jwk(self) -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": public["n"],
            "e": public["e"],
            "x5c": [base64.b64encode(self.certificate).decode()],
            # x5t is by definition the certificate's SHA-1 thumbprint (RFC 7517): not for security
            "x5t": _b64url(hashlib.sha1(self.certificate, usedforsecurity=False).digest()),
        }


class KeyRing:
    """The newest key signs; the one before stays published, as during an Auth0 rotation."""

    def __init__(self, common_name: str = "emulator.auth0.local") -> None:
        self._common_name = common_name
        self._keys = [SigningKey.generate(common_name)]

    @property
    def current(self) -> SigningKey:
        return self._keys[-1]

    @property
    def kids(self) -> list[str]:
        return [key.kid for key in self._keys]

    def rotate(self) -> None:
        # A second rotation drops the oldest key: tokens it signed stop verifying.
        self._keys = [self._keys[-1], SigningKey.generate(self._common_name)]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self._keys]}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        merged = {"kid": self.current.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(claims, self.current.private_key, algorithm="RS256", headers=merged)

    def verify(self, token: str, audience: str, issuer: str) -> dict[str, Any]:
        """Claims of a token this ring signed for `audience`; jwt.InvalidTokenError otherwise."""
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._keys:
            if key.kid == kid:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.private_key.public_key(),
                    algorithms=["RS256"],
                    audience=audience,
                    issuer=issuer,
                    options={"require": ["exp", "iat", "sub"]},
                )
                return claims
        raise jwt.InvalidTokenError("unknown kid")
