"""RS256 signing keys with rotation, published as a JWKS the way Auth0 does."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(secrets.token_urlsafe(16), rsa.generate_private_key(65537, 2048))

    def jwk(self) -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": public["n"],
            "e": public["e"],
            # Auth0 publishes a certificate chain; the SPKI stands in for it (verifiers use n/e).
            "x5c": [base64.b64encode(der).decode()],
            "x5t": _b64url(hashlib.sha1(der).digest()),  # noqa: S324 - a thumbprint, as in Auth0
        }


class KeyRing:
    """The current key signs; the previous one stays published, as during an Auth0 rotation."""

    def __init__(self) -> None:
        self._keys = [SigningKey.generate()]

    @property
    def current(self) -> SigningKey:
        return self._keys[-1]

    def rotate(self) -> None:
        self._keys = [self._keys[-1], SigningKey.generate()]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self._keys]}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        merged = {"kid": self.current.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(claims, self.current.private_key, algorithm="RS256", headers=merged)

    def verify(self, token: str, audience: str, issuer: str) -> dict[str, Any]:
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._keys:
            if key.kid == kid:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.private_key.public_key(),
                    algorithms=["RS256"],
                    audience=audience,
                    issuer=issuer,
                )
                return claims
        raise jwt.InvalidTokenError("unknown kid")
