"""Idempotency-Key claims in process, on real PostgreSQL through PgBouncer: what each state of a
key tells the request that claims it (create-user's retries depend on every branch)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from userapi.adapters.database import Database, PostgresDatabase
from userapi.adapters.migrate import apply_migrations
from userapi.domain.idempotency import IdempotencyKeys, request_fingerprint, validate_key
from userapi.platform.errors import APIError
from userapi.platform.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ENDPOINT = "create-user"
ACTOR = "auth0|caller"
FINGERPRINT = request_fingerprint({"email": "ada@example.com", "plan": "pro"})


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = PostgresDatabase(Settings(database_url=database_url))
    await apply_migrations(db)
    yield db
    await db.close()


def keys(database: Database, lease_seconds: float = 5) -> IdempotencyKeys:
    settings = Settings(idempotency_ttl_seconds=3600, idempotency_lease_seconds=lease_seconds)
    return IdempotencyKeys(settings, database)


def new_key() -> str:
    return "k-" + secrets.token_hex(8)


async def test_a_first_claim_is_fresh_and_scoped_to_endpoint_and_caller(
    database: Database,
) -> None:
    store, key = keys(database), new_key()
    claim = await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    assert (claim.endpoint, claim.actor, claim.key) == (ENDPOINT, ACTOR, key)
    assert (claim.is_replay, claim.taken_over, claim.auth0_user_id) == (False, False, None)
    # The same key from another caller, or for another endpoint, is another record.
    other = await store.claim(ENDPOINT, "auth0|someone-else", key, FINGERPRINT)
    assert not other.is_replay
    assert not other.taken_over
    assert not (await store.claim("other-endpoint", ACTOR, key, FINGERPRINT)).taken_over


async def test_the_same_key_with_another_body_is_a_422(database: Database) -> None:
    store, key = keys(database), new_key()
    await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    with pytest.raises(APIError) as raised:
        await store.claim(ENDPOINT, ACTOR, key, request_fingerprint({"email": "x@y.z"}))
    assert (raised.value.status, raised.value.error) == (422, "idempotency_key_reused")


async def test_a_request_that_cannot_wait_out_the_holders_lease_gets_a_409(
    database: Database,
) -> None:
    # A request waits at most one lease of its own process; here the holder's lease is longer.
    holder, impatient, key = keys(database, lease_seconds=5), keys(database, 0.3), new_key()
    await holder.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    with pytest.raises(APIError) as raised:
        await impatient.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    assert (raised.value.status, raised.value.error) == (409, "request_in_progress")
    assert raised.value.headers == {"Retry-After": "1"}


async def test_a_completed_key_replays_its_response(database: Database) -> None:
    store, key = keys(database), new_key()
    claim = await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    await store.record_auth0_user(claim, "auth0|created")
    async with database.transaction() as session:
        await store.complete(session, claim, 201, {"user_id": "auth0|created"})
    replay = await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    assert replay.is_replay
    assert (replay.replay_status, replay.replay_body) == (201, {"user_id": "auth0|created"})
    assert replay.auth0_user_id == "auth0|created"


async def test_a_waiting_request_replays_what_the_holder_completes(database: Database) -> None:
    store, key = keys(database), new_key()
    claim = await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    waiting = asyncio.create_task(store.claim(ENDPOINT, ACTOR, key, FINGERPRINT))
    await asyncio.sleep(0.15)
    assert not waiting.done()
    async with database.transaction() as session:
        await store.complete(session, claim, 201, {"user_id": "auth0|x"})
    replay = await asyncio.wait_for(waiting, 5)
    assert (replay.replay_status, replay.replay_body) == (201, {"user_id": "auth0|x"})


async def test_a_forgotten_failure_leaves_the_key_fresh_for_a_retry(database: Database) -> None:
    store, key = keys(database), new_key()
    claim = await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    await store.release(claim, forget=True)  # e.g. Auth0 refused the create: nothing happened
    retry = await store.claim(ENDPOINT, ACTOR, key, request_fingerprint({"other": "body"}))
    assert not retry.taken_over
    assert retry.auth0_user_id is None


async def test_a_retry_takes_over_a_released_key_and_learns_the_created_user(
    database: Database,
) -> None:
    store, key = keys(database), new_key()
    claim = await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    await store.record_auth0_user(claim, "auth0|made-before-the-crash")
    # Even `forget` keeps a record that names an Auth0 user: the retry must finish it.
    await store.release(claim, forget=True)
    retry = await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    assert retry.taken_over
    assert retry.auth0_user_id == "auth0|made-before-the-crash"
    assert retry.created_at == claim.created_at


async def test_a_holder_that_died_is_taken_over_once_its_lease_runs_out(
    database: Database,
) -> None:
    store, key = keys(database, lease_seconds=0.2), new_key()
    await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)  # never completed nor released
    await asyncio.sleep(0.3)
    retry = await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    assert retry.taken_over
    assert retry.auth0_user_id is None
    # The retry holds a fresh lease: a request that cannot wait it out is refused.
    with pytest.raises(APIError, match="in progress"):
        await keys(database, lease_seconds=0.05).claim(ENDPOINT, ACTOR, key, FINGERPRINT)


async def test_a_waiting_request_takes_over_a_holder_that_outlives_its_lease(
    database: Database,
) -> None:
    store, key = keys(database, lease_seconds=0.3), new_key()
    await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    started = asyncio.get_running_loop().time()
    waiter = await store.claim(ENDPOINT, ACTOR, key, FINGERPRINT)
    assert waiter.taken_over
    assert asyncio.get_running_loop().time() - started >= 0.2  # it waited for the lease


@pytest.mark.parametrize("key", ["", "a" * 256, "white space", "semi;colon", "ключ"])
def test_keys_outside_the_allowed_characters_are_a_400(key: str) -> None:
    with pytest.raises(APIError) as raised:
        validate_key(key)
    assert (raised.value.status, raised.value.error) == (400, "invalid_idempotency_key")
