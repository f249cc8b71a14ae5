"""The accounts table: the app's own row per user (plan, preferences), read and written here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from userapi.adapters.database import Database, Session
from userapi.adapters.local_cache import MISSING, LocalCache
from userapi.adapters.shared_store import SharedStore, key_segment
from userapi.platform.batch import Batcher


class Account(BaseModel):
    """The app's own data for a user, kept in PostgreSQL."""

    plan: str
    preferences: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class Accounts:
    def __init__(
        self,
        database: Database,
        local: LocalCache | None = None,
        store: SharedStore | None = None,
        key_prefix: str = "userapi:",
    ) -> None:
        self._database = database
        # Reads outside a transaction, asked for in one event-loop turn, share one query.
        self._reads: Batcher[str, Account | None] = Batcher(self._get_many)
        # This process's copy of the rows it read (adapters/local_cache.py), dropped in every
        # process when a write announces the row through `store`. Named in the store's key
        # space, though the rows never live there.
        self._local = local
        self._store = store
        self._prefix = f"{key_prefix}account:"

    def _key(self, user_id: str) -> str:
        return self._prefix + key_segment(user_id)

    @asynccontextmanager
    async def writing(self, user_id: str) -> AsyncIterator[Session]:
        """A transaction that may change `user_id`'s row. Once it has ended (committed or not),
        every process's copy of the row is dropped: announced after the commit, so a process
        that reads again meanwhile reads the committed row or keeps nothing."""
        try:
            async with self._database.transaction() as session:
                yield session
        finally:
            if self._local is not None:
                key = self._key(user_id)
                self._local.drop(key)
                if self._store is not None:
                    await self._store.announce(key)

    async def delete(self, session: Session, user_id: str) -> None:
        await session.execute("DELETE FROM accounts WHERE user_id = $1", user_id)

    def local_hit(self, user_id: str) -> object:
        """The row from this process's copy (an Account, or None: no row), or MISSING, with no
        await."""
        if self._local is None:
            return MISSING
        found: object = self._local.get(self._key(user_id))
        return found

    async def get(self, user_id: str, session: Session | None = None) -> Account | None:
        """The row, read in `session` when given (then never batched: a transaction reads
        its own writes)."""
        if session is None:
            found = self.local_hit(user_id)
            if found is not MISSING:
                return found  # type: ignore[return-value]
            return await self._reads.load(user_id)
        row = await session.fetchrow(
            "SELECT plan, preferences, created_at, updated_at FROM accounts WHERE user_id = $1",
            user_id,
        )
        return Account.model_validate(row) if row is not None else None

    async def _get_many(self, user_ids: Sequence[str]) -> list[Account | None]:
        # IN ($1, …, $n) rather than = ANY($1): one text for PostgreSQL and SQLite. Only the
        # placeholders are spliced in; the ids travel as bound parameters.
        placeholders = ", ".join(f"${index}" for index in range(1, len(user_ids) + 1))
        columns = "user_id, plan, preferences, created_at, updated_at"
        sql = f"SELECT {columns} FROM accounts WHERE user_id IN ({placeholders})"  # noqa: S608
        local = self._local
        since = local.begin() if local is not None else 0
        rows = await self._database.fetch(sql, *user_ids)
        found = {row["user_id"]: Account.model_validate(row) for row in rows}
        accounts = [found.get(user_id) for user_id in user_ids]
        if local is not None:
            for user_id, account in zip(user_ids, accounts, strict=True):
                local.put(self._key(user_id), account, since)
        return accounts

    async def upsert(
        self,
        user_id: str,
        *,
        plan: str | None = None,
        preferences: dict[str, Any] | None = None,
        session: Session | None = None,
    ) -> Account:
        now = datetime.now(UTC)
        row = await (session or self._database).fetchrow(
            """
            INSERT INTO accounts (user_id, created_at, updated_at, plan, preferences)
            VALUES ($1, $2, $2, $3, $4)
            ON CONFLICT (user_id) DO UPDATE SET
                updated_at = excluded.updated_at,
                plan = COALESCE($5, accounts.plan),
                preferences = COALESCE($6, accounts.preferences)
            RETURNING plan, preferences, created_at, updated_at
            """,
            user_id,
            now,
            plan or "free",
            preferences if preferences is not None else {},
            plan,
            preferences,
        )
        assert row is not None
        return Account.model_validate(row)
