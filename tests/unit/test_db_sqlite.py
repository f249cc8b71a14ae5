"""The embedded database of `make dev`: migrations and the accounts table on SQLite."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from userapi.adapters.database import SqliteDatabase
from userapi.adapters.migrate import apply_migrations, load_migrations
from userapi.domain.accounts import Accounts

pytestmark = pytest.mark.anyio
USER = "auth0|64f1c2a9e4b0a1b2c3d4e5f6"


def test_migrations_are_numbered_and_unique() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(set(versions))
    assert versions[0] == "0001"


async def test_migrations_apply_once(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "db.sqlite3")
    try:
        assert await apply_migrations(database) == [m.version for m in load_migrations()]
        assert await apply_migrations(database) == []
        rows = await database.fetch("SELECT version FROM schema_migrations")
        assert [r["version"] for r in rows] == [m.version for m in load_migrations()]
    finally:
        await database.close()


async def test_accounts_round_trip_json_and_timestamps(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "db.sqlite3")
    try:
        await apply_migrations(database)
        accounts = Accounts(database)
        assert await accounts.get(USER) is None
        created = await accounts.upsert(USER, plan="pro", preferences={"lang": "en", "n": [1, 2]})
        assert created.plan == "pro"
        assert created.created_at.tzinfo is not None
        updated = await accounts.upsert(USER, preferences={"lang": "fr"})
        assert updated.plan == "pro"  # kept
        assert updated.preferences == {"lang": "fr"}
        assert updated.created_at == created.created_at
        assert await accounts.get(USER) == updated
    finally:
        await database.close()


async def test_a_failed_transaction_leaves_nothing_behind(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "db.sqlite3")
    try:
        await apply_migrations(database)

        async def insert_then_fail() -> None:
            async with database.transaction() as session:
                await session.execute(
                    "INSERT INTO accounts (user_id, created_at, updated_at) VALUES ($1, $2, $2)",
                    USER,
                    "2026-01-01T00:00:00+00:00",
                )
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await insert_then_fail()
        assert await Accounts(database).get(USER) is None
    finally:
        await database.close()


async def test_concurrent_readers_share_one_connection_safely(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "db.sqlite3")
    try:
        await apply_migrations(database)
        accounts = Accounts(database)
        await accounts.upsert(USER, plan="team")
        plans: list[str] = []

        async def read() -> None:
            account = await accounts.get(USER)
            assert account is not None
            plans.append(account.plan)

        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(read)
        assert plans == ["team"] * 50
    finally:
        await database.close()


async def test_concurrent_reads_of_different_accounts_get_their_own_rows(tmp_path: Path) -> None:
    database = SqliteDatabase(tmp_path / "db.sqlite3")
    try:
        await apply_migrations(database)
        accounts = Accounts(database)
        users = [f"auth0|user{index}" for index in range(5)]
        for index, user in enumerate(users[:3]):
            await accounts.upsert(user, plan=f"plan-{index}")
        found: dict[str, str | None] = {}

        async def read(user: str) -> None:
            account = await accounts.get(user)
            found[user] = account.plan if account is not None else None

        async with anyio.create_task_group() as group:
            for user in users:
                group.start_soon(read, user)
        assert found == {
            users[0]: "plan-0",
            users[1]: "plan-1",
            users[2]: "plan-2",
            users[3]: None,
            users[4]: None,
        }
    finally:
        await database.close()
