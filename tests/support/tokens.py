"""Access tokens that a verifier must reject, crafted the way an attacker or a bug would."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from userapi.emulator import Emulator


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def claims(emulator: Emulator, audience: str, sub: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": emulator.config.base_url + "/",
        "sub": sub,
        "aud": [audience, emulator.config.base_url + "/userinfo"],
        "iat": now,
        "exp": now + 600,
        "permissions": [],
    }
    base.update(overrides)
    return base


def alg_none(payload: dict[str, Any]) -> str:
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(payload)}."


def hs256_with_public_key(payload: dict[str, Any], public_key_pem: bytes, kid: str) -> str:
    """The classic key-confusion attack: HMAC keyed with the RSA public key the server knows."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_segment(payload)}"
    signature = hmac.new(public_key_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{_b64(bytes(raw))}"


def tamper_payload(token: str, **changes: Any) -> str:
    """Keep the signature, change the claims: the signature no longer matches."""
    head, payload, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{head}.{_segment(data)}.{signature}"
