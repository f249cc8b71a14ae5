"""PgBouncer in transaction mode on a free port, configured as the chart's sidecar, in front of a
harness PostgreSQL."""

from __future__ import annotations

import csv
import io
import re
import shutil
import signal
import subprocess
from pathlib import Path

from harness.postgres import PASSWORD, ROLE, PostgresServer, run_psql
from harness.processes import (
    HOST,
    SERVICE_USER,
    as_service_user,
    binary,
    free_port,
    new_workdir,
    spawn_server,
    stop_process,
)


class PgBouncer:
    """PgBouncer in transaction mode in front of `postgres`, as the sidecar runs in each pod.

    Clients authenticate with SCRAM-SHA-256 against a plain-text userlist: a plain password lets
    PgBouncer also log in to PostgreSQL with any method the server asks for.
    """

    def __init__(
        self,
        postgres: PostgresServer,
        *,
        pool_size: int = 5,
        max_db_connections: int = 10,
        max_client_conn: int = 1000,
        port: int | None = None,
        start: bool = True,
    ) -> None:
        self.postgres = postgres
        self.port = port or free_port()
        self.pool_size = pool_size
        self.max_db_connections = max_db_connections
        self.dir = new_workdir("pgbouncer", service_user=True)
        self._log = self.dir / "stdout.log"
        self._pidfile = self.dir / "pgbouncer.pid"
        self.config = self.dir / "pgbouncer.ini"
        self.process: subprocess.Popen[bytes] | None = None
        self._closed = False
        upstream = f"host={postgres.host} port={postgres.port}"
        self._write(self.dir / "userlist.txt", f'"{ROLE}" "{PASSWORD}"\n')
        self._write(
            self.config,
            "[databases]\n"
            f"{postgres.database} = {upstream} dbname={postgres.database}\n"
            # Any other name goes to the same server: fresh per-test databases need no reload.
            f"* = {upstream}\n"
            "\n[pgbouncer]\n"
            f"listen_addr = {HOST}\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.dir}\n"
            f"logfile = {self.dir}/pgbouncer.log\n"
            f"pidfile = {self._pidfile}\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {self.dir}/userlist.txt\n"
            f"admin_users = {ROLE}\n"
            f"stats_users = {ROLE}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            f"max_db_connections = {max_db_connections}\n"
            f"max_client_conn = {max_client_conn}\n"
            # Transaction mode hands a server connection back after each transaction; a reset
            # query there would run between every two transactions of different clients.
            "server_reset_query =\n"
            # asyncpg sends these in its startup packet; PgBouncer refuses unknown ones.
            "ignore_startup_parameters = extra_float_digits,options\n",
        )
        if start:
            self.start()

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)  # the userlist holds a password
        if as_service_user():
            shutil.chown(path, SERVICE_USER, SERVICE_USER)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Starts (or, after `kill()`, restarts) on the same port."""
        if self.running:
            raise RuntimeError("pgbouncer is already running")
        self._closed = False
        # What a killed PgBouncer leaves behind; a stale pidfile or socket can stop a restart.
        for leftover in (self._pidfile, *self.dir.glob(".s.PGSQL.*")):
            leftover.unlink(missing_ok=True)
        self.process = spawn_server(
            [binary("pgbouncer"), str(self.config)], self._log, self.port, 15,
            service_user=True, cwd=self.dir, log_text=self.log_text,
        )  # fmt: skip

    def log_text(self) -> str:
        return "".join(
            path.read_text(errors="replace")
            for path in (self._log, self.dir / "pgbouncer.log")
            if path.exists()
        )

    def dsn(self, database: str | None = None) -> str:
        name = database or self.postgres.database
        return f"postgresql://{ROLE}:{PASSWORD}@{HOST}:{self.port}/{name}"

    def show(self, what: str) -> list[dict[str, str]]:
        """`SHOW <what>` (POOLS, SERVERS, CLIENTS, STATS, ...) on the admin console, as rows.

        The console speaks only the simple query protocol, which psql uses and asyncpg's
        `fetch` does not."""
        if not re.fullmatch(r"[A-Za-z_]+", what):
            raise ValueError(f"not a SHOW command: {what!r}")
        result = run_psql(self.dsn("pgbouncer"), f"SHOW {what}", csv_output=True)
        if result.returncode != 0:
            raise RuntimeError(f"SHOW {what} failed: {result.stderr}")
        return list(csv.DictReader(io.StringIO(result.stdout)))

    def server_connections(self, database: str) -> int:
        """PgBouncer's connections to PostgreSQL for `database`, whatever their state."""
        return sum(1 for row in self.show("SERVERS") if row.get("database") == database)

    def ensure_running(self) -> None:
        if not self._closed and not self.running:
            self.start()

    def kill(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGKILL)

    def stop(self) -> None:
        """Shuts down; `start()` may follow. The directory goes at the end of the session."""
        self._closed = True
        if self.process is not None:
            # SIGTERM is PgBouncer's immediate shutdown; SIGINT would wait for open transactions.
            stop_process(self.process, signal.SIGTERM)
