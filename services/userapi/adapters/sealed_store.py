"""The credentials pods share through Redis (the JWKS, the Management API token), sealed.

A cold pod takes the JWKS and the Management token another pod put in Redis, so that its first
answer needs no Auth0 call. Read as they were, whoever could write to that Redis could plant a
key set of their own and mint admin tokens, and whoever could read it had a Management token
for a day. Each entry is therefore sealed with SHARED_CACHE_KEY: encrypted and authenticated
with AES-256-GCM (`cryptography`'s AEAD), the store key it was written under bound in as
associated data (an entry moved to another key fails), and the id of the key that sealed it in
front, so that the key can be rotated: the first key seals, every key listed opens.

An entry that fails the check is a miss (the pod fetches from Auth0 and reseals), logged once
per process and store key. Without a key, nothing is shared: each pod keeps its own JWKS and
token in process (docs/architecture.md says why this and not a refusal to start).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from userapi.adapters.shared_store import MemoryStore, SharedStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from userapi.platform.settings import Settings

log = logging.getLogger("userapi.store")

VERSION = b"\x01"
KEY_ID_BYTES = 8
NONCE_BYTES = 12  # AES-GCM's standard nonce; random, far below the 2^32 messages per key bound
MIN_KEY_CHARS = 32  # e.g. `openssl rand -base64 32` (44 characters)
_HEADER = len(VERSION) + KEY_ID_BYTES
# Fallback store when no key is configured: one process's JWKS and token entries (and locks).
_LOCAL_ENTRIES = 64


class NoKey(Exception):
    """No usable SHARED_CACHE_KEY: the entries stay in this process."""


@dataclass(frozen=True)
class _Key:
    id: bytes
    aead: AESGCM


class Keyring:
    """The keys an entry may be sealed with: `keys[0]` seals, each of them opens."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise NoKey("no key")
        short = [i for i, secret in enumerate(secrets) if len(secret) < MIN_KEY_CHARS]
        if short:
            raise NoKey(f"key #{short[0] + 1} has fewer than {MIN_KEY_CHARS} characters")
        # Here, not at import: an endpoint that shares nothing never loads the AEAD module.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._keys = [
            _Key(_derive(secret, b"key id")[:KEY_ID_BYTES], AESGCM(_derive(secret, b"aes-256-gcm")))
            for secret in secrets
        ]
        self._by_id = {key.id: key for key in reversed(self._keys)}

    def seal(self, name: str, value: bytes) -> bytes:
        key = self._keys[0]
        header = VERSION + key.id
        nonce = os.urandom(NONCE_BYTES)
        return header + nonce + key.aead.encrypt(nonce, value, header + name.encode())

    def open(self, name: str, entry: bytes) -> bytes:
        """The value sealed under `name`; ValueError when `entry` is not one."""
        from cryptography.exceptions import InvalidTag

        if len(entry) < _HEADER + NONCE_BYTES + 16 or not entry.startswith(VERSION):
            raise ValueError("not a sealed entry")
        header = entry[:_HEADER]
        key = self._by_id.get(header[len(VERSION) :])
        if key is None:
            raise ValueError("sealed with a key this process does not hold")
        nonce, sealed = entry[_HEADER : _HEADER + NONCE_BYTES], entry[_HEADER + NONCE_BYTES :]
        try:
            return key.aead.decrypt(nonce, sealed, header + name.encode())
        except InvalidTag as exc:
            raise ValueError("failed authentication") from exc


def _derive(secret: str, purpose: bytes) -> bytes:
    # HMAC-SHA256 as a PRF (HKDF's expand step for one block): the operator's key may be any
    # string, the AEAD needs 32 uniform bytes, and the key id must reveal nothing of either.
    return hmac.digest(secret.encode(), b"userapi shared-cache v1 " + purpose, hashlib.sha256)


class SealedStore:
    """`SharedStore` over another, sealing every value on its way in and opening it on its way
    out. The keys are read on each use (a mounted Secret's rotation is live at once); the
    derived ring is remembered while they stay the same. These entries are read on a cold
    start and on a refresh, never on a cached request's path."""

    def __init__(
        self, inner: SharedStore, secrets: Callable[[], Sequence[str] | None], origin: str
    ) -> None:
        self._inner = inner
        self._secrets = secrets
        self._origin = origin  # what to name in a log line: the setting the keys come from
        self._ring: tuple[tuple[str, ...], Keyring] | None = None
        self._local = MemoryStore(_LOCAL_ENTRIES)
        self._logged: set[str] = set()

    def _keyring(self) -> Keyring | None:
        try:
            secrets = tuple(self._secrets() or ())
            if self._ring is None or self._ring[0] != secrets:
                self._ring = (secrets, Keyring(secrets))
            return self._ring[1]
        except (OSError, ValueError, NoKey) as exc:  # ValueError: a file that is not UTF-8
            self._once(
                "no-key",
                "no usable shared-cache key: the JWKS and Management token stay in this process",
                setting=self._origin,
                error=str(exc),
            )
            return None

    def _once(self, topic: str, message: str, **extra: str) -> None:
        if topic not in self._logged:
            self._logged.add(topic)
            log.warning(message, extra=extra)

    def _open(self, ring: Keyring, key: str, entry: bytes | None) -> bytes | None:
        if entry is None:
            return None
        try:
            return ring.open(key, entry)
        except ValueError as exc:
            # Planted, tampered with, moved from another key, or sealed with a key this pod
            # lacks: a miss (Auth0 is asked, the entry replaced), said once, never an error.
            self._once(
                key, "ignoring a shared entry that failed its check", key=key, error=str(exc)
            )
            return None

    async def get(self, key: str) -> bytes | None:
        ring = self._keyring()
        if ring is None:
            return await self._local.get(key)
        return self._open(ring, key, await self._inner.get(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        ring = self._keyring()
        if ring is None:
            return await self._local.get_many(keys)
        entries = await self._inner.get_many(keys)
        return [self._open(ring, key, entry) for key, entry in zip(keys, entries, strict=True)]

    async def set(self, key: str, value: bytes, ttl_seconds: float, announce: bool = False) -> bool:
        ring = self._keyring()
        if ring is None:
            return await self._local.set(key, value, ttl_seconds, announce)
        return await self._inner.set(key, ring.seal(key, value), ttl_seconds, announce)

    async def delete(self, key: str, announce: bool = False) -> bool:
        if self._keyring() is None:
            return await self._local.delete(key, announce)
        return await self._inner.delete(key, announce)

    async def announce(self, key: str) -> bool:
        return await self._inner.announce(key)

    async def try_lock(self, key: str, ttl_seconds: float) -> str | None:
        if self._keyring() is None:
            return await self._local.try_lock(key, ttl_seconds)
        return await self._inner.try_lock(key, ttl_seconds)

    async def unlock(self, key: str, token: str) -> None:
        if self._keyring() is None:
            await self._local.unlock(key, token)
        else:
            await self._inner.unlock(key, token)

    async def close(self) -> None:
        await self._local.close()  # the inner store is the process's own, closed by its owner


def credentials_store(settings: Settings, store: SharedStore) -> SharedStore:
    """Where the JWKS and the Management token are shared: `store` itself when it is this
    process's own (no REDIS_URL: nothing leaves the process), else sealed over it."""
    if not settings.redis_url:
        return store
    origin = "SHARED_CACHE_KEY_FILE" if settings.shared_cache_key_file else "SHARED_CACHE_KEY"
    return SealedStore(store, settings.shared_cache_keys, origin)
