"""Idempotency-Key records, kept in the database so that every pod sees them.

A key is scoped to (endpoint, caller). The first request inserts a 'pending' record and holds
it with a lease (locked_until); concurrent requests with the key wait for it to finish and then
replay its response. A request that dies after Auth0 created the user leaves the Auth0 user id
on the record: the next retry with the key finishes the work instead of creating another user.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from userapi.adapters.database import Database, Session
from userapi.platform import telemetry
from userapi.platform.errors import APIError
from userapi.platform.settings import Settings

_POLL_SECONDS = 0.1
# Expired records of keys nobody sends again are swept by the claims of new keys, at most once
# per interval per process: the table holds response bodies (emails, names), which must not
# outlive IDEMPOTENCY_TTL_SECONDS by more than that.
PURGE_INTERVAL_SECONDS = 600.0
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:")


def request_fingerprint(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: str) -> str:
    if not 1 <= len(key) <= 255 or not set(key) <= _KEY_CHARS:
        raise APIError(
            400, "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 characters: letters, digits and - _ . :",
        )  # fmt: skip
    return key


@dataclass(frozen=True)
class Claim:
    """A key held by one request, and what that request must do next. A key is scoped to
    (endpoint, actor): the same key from another caller or endpoint is another record."""

    endpoint: str
    actor: str
    key: str
    created_at: datetime
    auth0_user_id: str | None  # set: Auth0 already created the user; finish the rest
    replay_status: int | None = None
    replay_body: Any = None
    # Taken over from an earlier attempt that failed or died: Auth0 may have created the user
    # without that attempt learning its id. A fresh claim knows nobody tried before it.
    taken_over: bool = False

    @property
    def is_replay(self) -> bool:
        return self.replay_status is not None


class IdempotencyKeys:
    """One per process (web/resources.py), like the database pool it uses."""

    def __init__(self, settings: Settings, database: Database) -> None:
        lease_seconds = settings.idempotency_lease
        self._database = database
        self._ttl = timedelta(seconds=settings.idempotency_ttl_seconds)
        self._lease = timedelta(seconds=lease_seconds)
        self._wait_seconds = lease_seconds
        self._next_purge = 0.0  # monotonic; the first claim sweeps

    async def claim(self, endpoint: str, actor: str, key: str, fingerprint: str) -> Claim:
        with telemetry.span("userapi.idempotency.claim") as span:
            claim = await self._claim(endpoint, actor, key, fingerprint)
            span.outcome(
                "replay" if claim.is_replay else "taken_over" if claim.taken_over else "new"
            )
            return claim

    async def _claim(self, endpoint: str, actor: str, key: str, fingerprint: str) -> Claim:
        deadline = time.monotonic() + self._wait_seconds
        while True:
            now = datetime.now(UTC)
            await self._database.execute(
                "DELETE FROM idempotency_keys WHERE endpoint = $1 AND actor = $2"
                " AND idempotency_key = $3 AND expires_at < $4",
                endpoint, actor, key, now,
            )  # fmt: skip
            inserted = await self._database.fetchrow(
                "INSERT INTO idempotency_keys (endpoint, actor, idempotency_key, request_hash,"
                " state, locked_until, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)"
                " ON CONFLICT DO NOTHING RETURNING created_at",
                endpoint, actor, key, fingerprint, now + self._lease, now, now + self._ttl,
            )  # fmt: skip
            if inserted is not None:
                await self._purge_when_due(now)
                return Claim(endpoint, actor, key, now, None)
            row = await self._database.fetchrow(
                "SELECT request_hash, state, locked_until, auth0_user_id, response_status,"
                " response_body, created_at FROM idempotency_keys"
                " WHERE endpoint = $1 AND actor = $2 AND idempotency_key = $3",
                endpoint, actor, key,
            )  # fmt: skip
            if row is None:
                continue  # expired and deleted between the two statements: try again
            if row["request_hash"] != fingerprint:
                raise APIError(
                    422, "idempotency_key_reused",
                    "This Idempotency-Key was used with a different request body.",
                )  # fmt: skip
            if row["state"] == "done":
                return Claim(
                    endpoint, actor, key, row["created_at"], row["auth0_user_id"],
                    replay_status=row["response_status"], replay_body=row["response_body"],
                )  # fmt: skip
            if row["locked_until"] <= now:
                # The previous holder died or gave up: take the lease over, atomically.
                taken = await self._database.fetchrow(
                    "UPDATE idempotency_keys SET locked_until = $4 WHERE endpoint = $1"
                    " AND actor = $2 AND idempotency_key = $3 AND state = 'pending'"
                    " AND locked_until = $5 RETURNING auth0_user_id",
                    endpoint, actor, key, now + self._lease, row["locked_until"],
                )  # fmt: skip
                if taken is not None:
                    return Claim(
                        endpoint, actor, key, row["created_at"], taken["auth0_user_id"],
                        taken_over=True,
                    )  # fmt: skip
                continue
            if time.monotonic() >= deadline:
                raise APIError(
                    409, "request_in_progress",
                    "A request with this Idempotency-Key is still in progress; retry shortly.",
                    {"Retry-After": "1"},
                )  # fmt: skip
            await asyncio.sleep(_POLL_SECONDS)

    async def _purge_when_due(self, now: datetime) -> None:
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
            await self._database.execute("DELETE FROM idempotency_keys WHERE expires_at < $1", now)

    async def record_auth0_user(self, claim: Claim, user_id: str) -> None:
        """Auth0 created `user_id` for this claim: a retry finishes it instead of creating."""
        await self._database.execute(
            "UPDATE idempotency_keys SET auth0_user_id = $4"
            " WHERE endpoint = $1 AND actor = $2 AND idempotency_key = $3",
            claim.endpoint, claim.actor, claim.key, user_id,
        )  # fmt: skip

    async def complete(self, session: Session, claim: Claim, status: int, body: Any) -> None:
        """The response to replay, stored in the transaction that made it true."""
        await session.execute(
            "UPDATE idempotency_keys SET state = 'done', response_status = $4, response_body = $5"
            " WHERE endpoint = $1 AND actor = $2 AND idempotency_key = $3",
            claim.endpoint, claim.actor, claim.key, status, body,
        )  # fmt: skip

    async def release(self, claim: Claim, *, forget: bool) -> None:
        """Give the lease back after a failure; `forget` when nothing happened in Auth0."""
        if forget:
            await self._database.execute(
                "DELETE FROM idempotency_keys WHERE endpoint = $1 AND actor = $2"
                " AND idempotency_key = $3 AND state = 'pending' AND auth0_user_id IS NULL",
                claim.endpoint, claim.actor, claim.key,
            )  # fmt: skip
        await self._database.execute(
            "UPDATE idempotency_keys SET locked_until = $4 WHERE endpoint = $1 AND actor = $2"
            " AND idempotency_key = $3 AND state = 'pending'",
            claim.endpoint, claim.actor, claim.key, datetime.now(UTC) - timedelta(seconds=1),
        )  # fmt: skip
