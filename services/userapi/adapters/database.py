"""Database access: PostgreSQL through the PgBouncer sidecar, or an embedded SQLite file for dev.

SQL is written once, PostgreSQL-style (`$1` placeholders, JSONB and TIMESTAMPTZ columns); the
SQLite side translates placeholders and converts JSON and timestamps, so repositories and
migrations have one text for both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from userapi.platform import telemetry
from userapi.platform.errors import APIError, UpstreamError

if TYPE_CHECKING:
    import asyncpg

    from userapi.platform.settings import Settings

log = logging.getLogger("userapi.db")

Row = dict[str, Any]


class DatabaseUnavailable(UpstreamError):
    def to_api_error(self) -> APIError:
        return APIError(
            503, "database_unavailable", "The database is unavailable; try again later."
        )


class Session(Protocol):
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def execute(self, sql: str, *args: Any) -> None: ...

    async def execute_script(self, sql: str) -> None:
        """Several statements without parameters (migrations)."""
        ...


class Database(Session, Protocol):
    dialect: str

    def transaction(self) -> AbstractAsyncContextManager[Session]: ...

    async def warm(self) -> None: ...

    async def close(self) -> None: ...


# PostgreSQL --------------------------------------------------------------------------------------


class _PgSession:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        with telemetry.query(sql):
            record = await self._connection.fetchrow(sql, *args)
        return dict(record) if record is not None else None

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        with telemetry.query(sql):
            records = await self._connection.fetch(sql, *args)
        return [dict(record) for record in records]

    async def execute(self, sql: str, *args: Any) -> None:
        with telemetry.query(sql):
            await self._connection.execute(sql, *args)

    async def execute_script(self, sql: str) -> None:
        await self._connection.execute(
            sql
        )  # no arguments: the simple protocol takes many statements


async def _init_connection(connection: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(connection: Any) -> None:
    """Replaces asyncpg's reset on release (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL):
    a round trip per request that finds nothing to reset, as this code never leaves session
    state behind (see PostgresDatabase). asyncpg still rolls back an open transaction first."""


class PostgresDatabase:
    """A small asyncpg pool, opened beside serving (`warm`): a cold start never waits for it.

    PgBouncer runs in transaction mode, so nothing may outlive a transaction: no SET, no
    session advisory locks, and no named prepared statements (Debian's PgBouncer 1.18 cannot
    track them; asyncpg's statement cache is turned off and it falls back to unnamed ones).
    """

    dialect = "postgresql"

    def __init__(self, settings: Settings) -> None:
        assert settings.database_url is not None
        self._settings = settings
        self._dsn = settings.database_url
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        # Knative starts the app and the PgBouncer sidecar with no order: until the first
        # connection succeeds, refused connections are retried for a short grace period.
        self._grace_until = time.monotonic() + settings.db_startup_grace_seconds
        self._connected_once = False

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                import asyncpg

                password = self._settings.database_password
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    password=password.get_secret_value() if password is not None else None,
                    min_size=0,
                    max_size=self._settings.db_pool_max_size,
                    statement_cache_size=0,
                    # Idle connections to the sidecar stay open: they cost PostgreSQL nothing
                    # (PgBouncer keeps its own server connections), while reopening one under
                    # load, a SCRAM login and type introspection, held up a whole batch of
                    # requests for up to half a second (docs/performance.md).
                    max_inactive_connection_lifetime=0,
                    timeout=self._settings.db_connect_timeout_seconds,
                    command_timeout=self._settings.db_command_timeout_seconds,
                    init=_init_connection,
                    reset=_keep_session,
                )
                pool = self._pool
                telemetry.observe_pool(
                    "pgbouncer",
                    lambda: (pool.get_size() - pool.get_idle_size(), pool.get_idle_size()),
                )
            return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        import asyncpg

        pool = await self._get_pool()
        delay = 0.05
        draining_until = time.monotonic() + self._settings.db_connect_timeout_seconds
        while True:
            try:
                connection = await pool.acquire()
                break
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if self._sidecar_draining(exc, pool) and time.monotonic() < draining_until:
                    # Knative sends SIGTERM to the app and PgBouncer at once. PgBouncer (>= 1.23)
                    # then refuses new clients but serves the open ones until they leave: a
                    # request still in flight waits for one of the pool's open connections.
                    await asyncio.sleep(0.01)
                    continue
                if self._connected_once or time.monotonic() + delay > self._grace_until:
                    log.error("database connection failed", extra={"error": repr(exc)})
                    raise DatabaseUnavailable(str(exc)) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        self._connected_once = True
        try:
            yield connection
        except (
            TimeoutError,
            OSError,
            asyncpg.InterfaceError,
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
        ) as exc:
            log.error("database call failed", extra={"error": repr(exc)})
            raise DatabaseUnavailable(str(exc)) from exc
        finally:
            await pool.release(connection)

    async def warm(self) -> None:
        """Opens the pool's first connection before a request asks for it (the app's lifespan
        runs this beside serving): asyncpg's import, the login and the type set-up were most
        of a cold pod's first read. A failure is left to the first request to report."""
        try:
            async with self._connection():
                pass
        except DatabaseUnavailable:
            pass  # _connection logged it
        except Exception as exc:  # a task nobody awaits: its failure must still be told
            log.warning("opening a database connection failed", extra={"error": repr(exc)})

    def _sidecar_draining(self, exc: BaseException, pool: asyncpg.Pool) -> bool:
        """A refused connection while the pool still holds open ones: the sidecar is shutting
        down, not gone (a PgBouncer that died takes the open connections with it)."""
        return (
            self._connected_once and isinstance(exc, ConnectionRefusedError) and pool.get_size() > 0
        )

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._connection() as connection:
            return await _PgSession(connection).fetchrow(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._connection() as connection:
            return await _PgSession(connection).fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._connection() as connection:
            await connection.execute(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with self._connection() as connection, connection.transaction():
            yield _PgSession(connection)

    async def execute_script(self, sql: str) -> None:
        async with self.transaction() as session:
            await session.execute_script(sql)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=5.0)
            except (TimeoutError, OSError) as exc:
                log.warning("closing the database pool timed out", extra={"error": repr(exc)})
                pool.terminate()


# SQLite ------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\$(\d+)")


def _sqlite_sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _register_sqlite_converters() -> None:
    # Columns declared JSONB / TIMESTAMPTZ (the PostgreSQL names) come back as Python values.
    sqlite3.register_converter("JSONB", lambda raw: json.loads(raw))
    sqlite3.register_converter("TIMESTAMPTZ", lambda raw: datetime.fromisoformat(raw.decode()))


class _SqliteSession:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def _run(self, sql: str, args: Sequence[Any]) -> sqlite3.Cursor:
        return self._connection.execute(_sqlite_sql(sql), [_sqlite_value(a) for a in args])

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row = await asyncio.to_thread(lambda: self._run(sql, args).fetchone())
        return dict(row) if row is not None else None

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        rows = await asyncio.to_thread(lambda: self._run(sql, args).fetchall())
        return [dict(row) for row in rows]

    async def execute(self, sql: str, *args: Any) -> None:
        await asyncio.to_thread(self._run, sql, args)

    async def execute_script(self, sql: str) -> None:
        # sqlite3's executescript() commits the open transaction first; statement by statement
        # keeps a migration and its bookkeeping atomic.
        for statement in _statements(sql):
            await asyncio.to_thread(self._connection.execute, statement)


def _statements(script: str) -> list[str]:
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip() and not all(
        line.strip().startswith("--") or not line.strip() for line in pending.splitlines()
    ):
        if not sqlite3.complete_statement(pending + ";"):
            raise ValueError(f"incomplete SQL statement: {pending.strip()[:80]}")
        statements.append(pending.strip())  # the last statement may omit its semicolon
    return statements


class SqliteDatabase:
    """One connection, one statement at a time, run off the event loop. For `userapi dev`."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            _register_sqlite_converters()
            self._path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self._path,
                detect_types=sqlite3.PARSE_DECLTYPES,
                check_same_thread=False,
                isolation_level=None,  # explicit BEGIN/COMMIT below
            )
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA busy_timeout=5000")
            self._connection = connection
        return self._connection

    @asynccontextmanager
    async def _session(self, begin: str | None) -> AsyncIterator[_SqliteSession]:
        async with self._lock:
            connection = await asyncio.to_thread(self._open)
            if begin is None:
                yield _SqliteSession(connection)
                return
            await asyncio.to_thread(connection.execute, begin)
            try:
                yield _SqliteSession(connection)
            except BaseException:
                await asyncio.to_thread(connection.execute, "ROLLBACK")
                raise
            await asyncio.to_thread(connection.execute, "COMMIT")

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._session(None) as session:
            return await session.fetchrow(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._session(None) as session:
            return await session.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._session(None) as session:
            await session.execute(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with self._session("BEGIN IMMEDIATE") as session:
            yield session

    async def execute_script(self, sql: str) -> None:
        async with self.transaction() as session:
            await session.execute_script(sql)

    async def warm(self) -> None:
        """Nothing: opening the file costs a development server's first request little."""

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.to_thread(connection.close)


def create_database(settings: Settings) -> Database:
    if settings.database_url:
        return PostgresDatabase(settings)
    return SqliteDatabase(settings.sqlite_path)
