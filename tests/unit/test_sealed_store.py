"""SealedStore: the JWKS and the Management token shared through Redis are sealed with
SHARED_CACHE_KEY; whatever fails the check is a miss, said once (issue 26, item 2)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from userapi.adapters.sealed_store import Keyring, NoKey, SealedStore, credentials_store
from userapi.adapters.shared_store import MemoryStore
from userapi.platform.settings import Settings

from tests.support.imports import imported_after

pytestmark = pytest.mark.anyio

KEY = "k" * 32
OTHER = "o" * 40
JWKS = "userapi:jwks:v1"


def sealed(inner: MemoryStore, *keys: str) -> SealedStore:
    return SealedStore(inner, lambda: list(keys), "SHARED_CACHE_KEY")


async def test_a_value_goes_in_sealed_and_comes_out_as_it_was() -> None:
    inner = MemoryStore(10)
    store = sealed(inner, KEY)
    assert await store.set(JWKS, b'{"keys": []}', 60)
    raw = await inner.get(JWKS)
    assert raw is not None
    assert b"keys" not in raw
    assert await store.get(JWKS) == b'{"keys": []}'
    assert await store.get_many([JWKS, "userapi:absent"]) == [b'{"keys": []}', None]


async def test_an_entry_moved_to_another_key_is_a_miss() -> None:
    inner = MemoryStore(10)
    store = sealed(inner, KEY)
    await store.set("userapi:auth0:mgmt-token:a", b"secret", 60)
    moved = await inner.get("userapi:auth0:mgmt-token:a")
    assert moved is not None
    await inner.set("userapi:auth0:mgmt-token:b", moved, 60)
    assert await store.get("userapi:auth0:mgmt-token:b") is None


async def test_a_failed_check_is_logged_once_per_key(caplog: pytest.LogCaptureFixture) -> None:
    inner = MemoryStore(10)
    store = sealed(inner, KEY)
    caplog.set_level(logging.WARNING, "userapi.store")
    for _ in range(3):
        await inner.set(JWKS, b'{"keys": [{"kid": "planted"}]}', 60)
        assert await store.get(JWKS) is None
    await inner.set("userapi:other", b"planted", 60)
    assert await store.get("userapi:other") is None
    failed = [r for r in caplog.records if r.getMessage().startswith("ignoring a shared entry")]
    assert [getattr(r, "key", None) for r in failed] == [JWKS, "userapi:other"]
    assert all("planted" not in r.getMessage() for r in caplog.records)


async def test_the_previous_key_opens_but_never_seals() -> None:
    inner = MemoryStore(10)
    await sealed(inner, OTHER).set(JWKS, b"old", 60)
    rotating = sealed(inner, KEY, OTHER)
    assert await rotating.get(JWKS) == b"old"
    await rotating.set(JWKS, b"new", 60)
    assert await sealed(inner, KEY).get(JWKS) == b"new"
    assert await sealed(inner, OTHER).get(JWKS) is None


@pytest.mark.parametrize("keys", [(), ("short",), (KEY, "short")])
def test_a_missing_or_short_key_is_no_key(keys: tuple[str, ...]) -> None:
    with pytest.raises(NoKey):
        Keyring(keys)


async def test_without_a_usable_key_entries_stay_in_the_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inner = MemoryStore(10)
    settings = Settings(redis_url="redis://127.0.0.1:1/0", shared_cache_key_file=tmp_path / "no")
    store = credentials_store(settings, inner)
    caplog.set_level(logging.WARNING, "userapi.store")
    assert await store.set(JWKS, b"jwks", 60)
    assert await store.get(JWKS) == b"jwks"
    assert await inner.get(JWKS) is None  # never written where other processes read
    lock = await store.try_lock(JWKS + ":lock", 5)
    assert lock is not None
    assert await inner.get(JWKS + ":lock") is None
    warned = [r for r in caplog.records if r.getMessage().startswith("no usable shared-cache")]
    assert len(warned) == 1
    assert getattr(warned[0], "setting", None) == "SHARED_CACHE_KEY_FILE"


async def test_a_key_file_that_is_not_text_is_no_key(tmp_path: Path) -> None:
    key_file = tmp_path / "shared-cache-key"
    key_file.write_bytes(b"\xff\xfe" * 32)
    inner = MemoryStore(10)
    settings = Settings(redis_url="redis://127.0.0.1:1/0", shared_cache_key_file=key_file)
    store = credentials_store(settings, inner)
    assert await store.set(JWKS, b"jwks", 60)
    assert await inner.get(JWKS) is None


async def test_the_key_file_is_read_on_use_so_a_rotation_is_live(tmp_path: Path) -> None:
    key_file = tmp_path / "shared-cache-key"
    key_file.write_text(OTHER + "\n")
    inner = MemoryStore(10)
    settings = Settings(redis_url="redis://127.0.0.1:1/0", shared_cache_key_file=key_file)
    store = credentials_store(settings, inner)
    await store.set(JWKS, b"v1", 60)
    key_file.write_text(f"{KEY}\n{OTHER}\n")  # the Secret updated in place: new key first
    assert await store.get(JWKS) == b"v1"
    await store.set(JWKS, b"v2", 60)
    assert await sealed(inner, KEY).get(JWKS) == b"v2"


def test_without_redis_nothing_is_sealed() -> None:
    # No REDIS_URL: the store is the process's own (`make dev`), no key needed.
    inner = MemoryStore(10)
    assert credentials_store(Settings(), inner) is inner


def test_the_aead_module_loads_only_when_an_entry_is_sealed_or_opened() -> None:
    modules = imported_after("import userapi.endpoints.get_user, userapi.web.resources")
    assert "cryptography.hazmat.primitives.ciphers.aead" not in modules
