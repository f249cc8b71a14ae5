"""A throwaway PostgreSQL cluster on a free port (or uniquely named databases on an existing
server), and psql, which both it and PgBouncer's admin console are driven through."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Mapping

from harness.processes import (
    HOST,
    binary,
    free_port,
    new_workdir,
    remove_workdir,
    spawn,
    stop_process,
    wait_for_port,
)

ROLE = "userapi"
PASSWORD = "userapi-test-pw"
# An existing server's admin DSN (a superuser, or a role with CREATEDB and CREATEROLE), e.g.
# postgresql://postgres:secret@127.0.0.1:5432/postgres. With it no cluster is initialised: each
# run gets uniquely named databases there (dropped at the end) and the `userapi` role, created if
# missing, gets the test password. Point it at a throwaway server only.
EXTERNAL_POSTGRES_ENV = "USERAPI_TEST_POSTGRES_DSN"


def _clean_pg_env() -> dict[str, str]:
    # PGOPTIONS, PGSSLMODE, PGSERVICE... from the developer's shell must not change what we test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "5"
    return env


def run_psql(dsn: str, sql: str, *, csv_output: bool = False) -> subprocess.CompletedProcess[str]:
    """One statement through psql: the simple query protocol, which PgBouncer's console needs."""
    args = [binary("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql]
    args[1:1] = ["--csv"] if csv_output else ["-qAt"]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, check=False, env=_clean_pg_env()
    )


class PostgresServer:
    """A throwaway cluster tuned for speed over durability, with the `userapi` role (LOGIN, the
    test password) and a database it owns; or, with USERAPI_TEST_POSTGRES_DSN, an existing server
    on which only uniquely named databases are created."""

    def __init__(
        self,
        *,
        admin_dsn: str | None = None,
        max_connections: int = 200,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.max_connections = max_connections
        # More `-c name=value` of the server it starts (e.g. ssl=on with a test certificate).
        self.settings = dict(settings or {})
        self._external_dsn = admin_dsn or os.environ.get(EXTERNAL_POSTGRES_ENV) or None
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = new_workdir("postgres", service_user=True)
        self._log = self.dir / "postgres.log"
        self._created: list[str] = []
        self._counter = 0
        if self._external_dsn:
            parts = urllib.parse.urlsplit(self._external_dsn)
            self.host = parts.hostname or HOST
            self.port = parts.port or 5432
            # Never `userapi`: a shared server may hold someone's data under that name.
            self.database = f"userapi_test_{os.getpid()}_{secrets.token_hex(3)}"
        else:
            self.host = HOST
            self.port = free_port()
            self.database = "userapi"
            self._start_cluster()
        self.create_role()
        self.create_database(self.database)

    @property
    def external(self) -> bool:
        return self._external_dsn is not None

    def _start_cluster(self) -> None:
        data = self.dir / "data"
        initdb = spawn(
            [binary("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            self._log, service_user=True, cwd=self.dir,
        )  # fmt: skip
        try:
            code = initdb.wait(timeout=120)
        finally:
            stop_process(initdb)
        if code != 0:
            raise RuntimeError(f"initdb failed ({code}):\n{self.log_text()}")
        self.process = spawn(
            [binary("postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=" + HOST, "-c", f"max_connections={self.max_connections}",
             # Durability buys nothing in a cluster that is deleted after the run.
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "wal_level=minimal", "-c", "max_wal_senders=0", "-c", "checkpoint_timeout=1h",
             "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning",
             *(arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}"))],
            self._log, service_user=True, cwd=self.dir,
        )  # fmt: skip
        try:
            wait_for_port(HOST, self.port, 30, self.process)
            # The port opens before recovery ends; until then connections are refused.
            deadline = time.monotonic() + 30
            while run_psql(self.admin_dsn(), "SELECT 1").returncode != 0:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not accept connections")
                time.sleep(0.05)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{self.log_text()}") from None

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def admin_dsn(self, database: str = "postgres") -> str:
        if self._external_dsn:
            parts = urllib.parse.urlsplit(self._external_dsn)
            return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def dsn(self, database: str | None = None, user: str = ROLE) -> str:
        return f"postgresql://{user}:{PASSWORD}@{self.host}:{self.port}/{database or self.database}"

    def psql(
        self, sql: str, database: str = "postgres", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs `sql` as the superuser; `.stdout` holds unaligned, tuples-only rows."""
        result = run_psql(self.admin_dsn(database), sql)
        if check and result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result

    def create_role(self) -> None:
        self.psql(
            f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
            f"CREATE ROLE {ROLE} LOGIN; END IF; END$$; "
            f"ALTER ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"
        )

    def create_database(self, name: str | None = None) -> str:
        """Creates an empty database owned by `userapi` (a fresh unique name by default) and
        returns its name: `.dsn(name)` reaches it directly, `PgBouncer.dsn(name)` through it."""
        if name is None:
            self._counter += 1
            name = f"userapi_test_{os.getpid()}_{self._counter}"
            if self.external:
                name += f"_{secrets.token_hex(3)}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"unsupported database name: {name!r}")
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        # template0: nobody is ever connected to it, which CREATE DATABASE requires of its template
        self.psql(f'CREATE DATABASE "{name}" OWNER {ROLE} TEMPLATE template0')
        self._created.append(name)
        return name

    def stop(self) -> None:
        if self.process is not None:
            # SIGINT to the postmaster alone is a "fast" shutdown: it ends its backends itself.
            stop_process(self.process, signal.SIGINT, whole_group=False)
        elif self.external:
            for name in reversed(self._created):
                self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', check=False)
            self._created.clear()
        remove_workdir(self.dir)
