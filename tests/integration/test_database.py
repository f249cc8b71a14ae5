"""PostgreSQL through PgBouncer as a pod sees it: migrations as Jobs, a sidecar that starts late."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
from typing import Any

import pytest
from userapi.adapters.database import PostgresDatabase
from userapi.adapters.migrate import load_migrations
from userapi.domain.accounts import Accounts
from userapi.domain.users import user_path
from userapi.platform.settings import Settings

from harness.emulator import EmulatorHandle
from harness.pgbouncer import PgBouncer
from harness.postgres import PostgresServer
from harness.processes import USERAPI, code_env, free_port
from harness.userapi import migrate, service_env, start_service

pytestmark = pytest.mark.integration


def test_concurrent_migrations_apply_each_version_once(
    postgres_server: PostgresServer, pgbouncer: PgBouncer
) -> None:
    url = pgbouncer.dsn(postgres_server.create_database())
    env = {"DATABASE_URL": url, "PATH": "/usr/bin:/bin", **code_env()}
    runs = [
        subprocess.Popen(
            [USERAPI, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0], outputs
    applied = [out for out, _ in outputs if "applied 0001" in out]
    assert len(applied) == 1, outputs  # the others waited on the lock and found nothing to do
    rows = postgres_server.psql(
        "SELECT version FROM schema_migrations", database=url.rsplit("/", 1)[1]
    )
    assert rows.stdout.split() == [m.version for m in load_migrations()]
    assert "up to date" in migrate(url)


def _migrated_database(postgres_server: PostgresServer) -> str:
    database = postgres_server.create_database()
    migrate(postgres_server.dsn(database))
    return database


def test_a_late_pgbouncer_sidecar_is_waited_for(
    emulator: EmulatorHandle,
    clean_emulator: EmulatorHandle,
    postgres_server: PostgresServer,
    redis_server: Any,
) -> None:
    database = _migrated_database(postgres_server)
    # The sidecar's port is known but nothing listens yet, as in a pod's first moments.
    late = PgBouncer(postgres_server, port=free_port(), start=False)
    svc = start_service("get-user", service_env(emulator, redis_server.url, late.dsn(database)))
    try:
        user = clean_emulator.create_user("late-sidecar@example.com")
        token = clean_emulator.token(user["user_id"], [])
        result: dict[str, Any] = {}
        request = threading.Thread(target=lambda: result.update(r=svc.get("/users/me", token)))
        started = time.monotonic()
        request.start()
        time.sleep(0.8)
        late.start()
        request.join(timeout=15)
        assert result["r"].status_code == 200, result["r"].text
        assert time.monotonic() - started >= 0.8
        assert svc.get(user_path(user["user_id"]), token).status_code == 200
    finally:
        svc.close()
        late.stop()


def test_a_new_process_opens_its_connection_before_its_first_request(
    emulator: EmulatorHandle, postgres_server: PostgresServer, redis_server: Any
) -> None:
    """A cold pod's first read should not wait for asyncpg's import, the login and the type
    set-up: the lifespan opens the connection beside serving (Resources.warm)."""
    database = _migrated_database(postgres_server)
    bouncer = PgBouncer(postgres_server)
    svc = start_service("get-user", service_env(emulator, redis_server.url, bouncer.dsn(database)))
    try:
        deadline = time.monotonic() + 10
        while not [c for c in bouncer.show("CLIENTS") if c.get("database") == database]:
            assert time.monotonic() < deadline, "no connection before the first request"
            time.sleep(0.05)
    finally:
        svc.close()
        bouncer.stop()


def test_a_database_outage_is_a_503_json_error(
    emulator: EmulatorHandle,
    clean_emulator: EmulatorHandle,
    postgres_server: PostgresServer,
    redis_server: Any,
) -> None:
    database = _migrated_database(postgres_server)
    bouncer = PgBouncer(postgres_server)
    svc = start_service("get-user", service_env(emulator, redis_server.url, bouncer.dsn(database)))
    try:
        user = clean_emulator.create_user("db-outage@example.com")
        token = clean_emulator.token(user["user_id"], [])
        for _ in range(3):  # the first, in a process just started, may come before it listens
            assert svc.get("/users/me", token).status_code == 200
            time.sleep(0.1)
        other = clean_emulator.create_user("db-outage-other@example.com")
        other_token = clean_emulator.token(other["user_id"], [])
        bouncer.kill()
        # A row the process already holds is answered from its own copy (LOCAL_CACHE_SECONDS);
        # one it must read is a prompt, JSON 503.
        assert svc.get("/users/me", token).status_code == 200
        response = svc.get("/users/me", other_token)
        assert response.status_code == 503
        assert response.json()["error"] == "database_unavailable"
        bouncer.start()
        deadline = time.monotonic() + 10
        while svc.get("/users/me", other_token).status_code != 200:
            assert time.monotonic() < deadline, "did not recover after PgBouncer came back"
            time.sleep(0.2)
    finally:
        svc.close()
        bouncer.stop()


@pytest.mark.parametrize(("password", "status"), [("userapi-test-pw", 200), ("wrong", 503)])
def test_the_password_may_come_apart_from_the_url(
    emulator: EmulatorHandle,
    clean_emulator: EmulatorHandle,
    postgres_server: PostgresServer,
    pgbouncer: PgBouncer,
    redis_server: Any,
    password: str,
    status: int,
) -> None:
    database = _migrated_database(postgres_server)
    # PgBouncer checks the password (SCRAM), so only DATABASE_PASSWORD can make this work.
    url = f"postgresql://userapi@127.0.0.1:{pgbouncer.port}/{database}"
    env = {
        **service_env(emulator, redis_server.url, url),
        "DATABASE_PASSWORD": password,
        "DB_STARTUP_GRACE_SECONDS": "0",
    }
    svc = start_service("get-user", env)
    try:
        user = clean_emulator.create_user(f"pw-{password}@example.com")
        response = svc.get("/users/me", clean_emulator.token(user["user_id"], []))
        assert response.status_code == status, response.text
        assert password not in svc.process.log_text()
    finally:
        svc.close()


class _CountingDatabase(PostgresDatabase):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.queries: list[str] = []

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        self.queries.append(sql)
        return await super().fetch(sql, *args)


def _settings(database_url: str) -> Settings:
    return Settings(
        auth0_domain="example.us.auth0.com",
        auth0_audience="https://api",
        auth0_client_id="id",
        auth0_client_secret="secret",
        database_url=database_url,
    )


@pytest.mark.anyio
async def test_concurrent_account_reads_share_one_query_through_pgbouncer(
    database_url: str,
) -> None:
    migrate(database_url)
    database = _CountingDatabase(_settings(database_url))
    accounts = Accounts(database)
    try:
        users = [f"auth0|batch{index}" for index in range(30)]
        for index, user in enumerate(users[:20]):
            await accounts.upsert(user, plan=f"plan-{index}")
        database.queries.clear()
        read = await asyncio.gather(*(accounts.get(user) for user in [*users, users[0]]))
        assert [a.plan if a else None for a in read] == [
            *(f"plan-{index}" for index in range(20)),
            *([None] * 10),
            "plan-0",
        ]
        assert len(database.queries) == 1
        assert "IN ($1, " in database.queries[0]
    finally:
        await database.close()


@pytest.mark.anyio
async def test_expired_idempotency_records_are_swept_by_new_claims(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from userapi.domain import idempotency

    migrate(database_url)
    database = PostgresDatabase(_settings(database_url))
    short = idempotency.IdempotencyKeys(Settings(idempotency_ttl_seconds=0.05), database)
    long = idempotency.IdempotencyKeys(Settings(idempotency_ttl_seconds=3600), database)

    async def records() -> int:
        sql = "SELECT count(*) AS n FROM idempotency_keys WHERE actor = $1"
        row = await database.fetchrow(sql, "auth0|sweeper")
        assert row is not None
        return int(row["n"])

    try:
        for index in range(3):
            await short.claim("create-user", "auth0|sweeper", f"old-{index}", "hash")
        await long.claim("create-user", "auth0|sweeper", "kept", "hash")
        await asyncio.sleep(0.1)
        monkeypatch.setattr(long, "_next_purge", 0.0)  # due now
        await long.claim("create-user", "auth0|sweeper", "new", "hash")
        assert await records() == 2  # kept and new
        # Not due again for PURGE_INTERVAL_SECONDS: claims do not sweep on every request.
        await short.claim("create-user", "auth0|sweeper", "old-again", "hash")
        await asyncio.sleep(0.1)
        await long.claim("create-user", "auth0|sweeper", "newer", "hash")
        assert await records() == 4
    finally:
        await database.close()


def test_the_audit_trail_records_a_request_id_the_caller_did_not_choose(
    emulator: EmulatorHandle,
    clean_emulator: EmulatorHandle,
    postgres_server: PostgresServer,
    pgbouncer: PgBouncer,
    redis_server: Any,
) -> None:
    database = _migrated_database(postgres_server)
    svc = start_service(
        "update-user", service_env(emulator, redis_server.url, pgbouncer.dsn(database))
    )
    try:
        user = clean_emulator.create_user("audited@example.com")
        token = clean_emulator.token(user["user_id"], [])
        answered: list[str] = []
        # Twice the same X-Request-Id, as a caller forging or reusing one sends it; then none.
        for headers in ({"X-Request-Id": "forged-1"}, {"X-Request-Id": "forged-1"}, {}):
            response = svc.http.patch(
                "/users/me",
                json={"name": f"Name {len(answered)}"},
                headers={"Authorization": f"Bearer {token}", **headers},
            )
            assert response.status_code == 200, response.text
            answered.append(response.headers["x-request-id"])
        rows = postgres_server.psql(
            "SELECT request_id || ' ' || server_request_id FROM audit_log ORDER BY occurred_at",
            database=database,
        ).stdout.split("\n")
        recorded = [row.split(" ") for row in rows if row]
        assert [client for client, _ in recorded] == answered
        servers = [server for _, server in recorded]
        assert len(set(servers)) == 3, recorded  # one per request, whatever the caller sent
        assert all(re.fullmatch(r"[0-9a-f]{32}", server) for server in servers), recorded
        assert servers[2] == answered[2]  # without a caller's id, the one the response named
        # The log lines of a request with a caller's id name the server's too.
        logged = {line.get("server_request_id") for line in svc.request_logs("/users/me", 3)}
        assert set(servers[:2]) <= logged
    finally:
        svc.close()
