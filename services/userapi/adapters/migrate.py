"""Versioned SQL migrations (`userapi migrate`): idempotent, and safe when several run at once.

Everything happens in one transaction that first takes a transaction-scoped advisory lock, so
concurrent runners (a Helm hook retried, two Jobs) queue up and the later ones find nothing to
do. Transaction-scoped locks are also the only kind that works through PgBouncer in
transaction mode.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from userapi.adapters.database import Database

log = logging.getLogger("userapi.migrate")

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_ID = 0x75736572617069  # "userapi": any constant shared by every runner

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
);
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("userapi.migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(match[1], match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return found


async def apply_migrations(database: Database) -> list[str]:
    """Apply what is missing; return the versions applied by this call."""
    applied_now: list[str] = []
    async with database.transaction() as session:
        if database.dialect == "postgresql":
            await session.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        await session.execute_script(_BOOKKEEPING)
        done = {
            row["version"] for row in await session.fetch("SELECT version FROM schema_migrations")
        }
        for migration in load_migrations():
            if migration.version in done:
                continue
            log.info(
                "applying migration",
                extra={"version": migration.version, "migration": migration.name},
            )
            await session.execute_script(migration.sql)
            await session.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                datetime.now(UTC),
            )
            applied_now.append(migration.version)
    return applied_now
