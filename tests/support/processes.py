from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

# PostgreSQL and PgBouncer refuse to run as root; CI runs as root, so they run as this user.
SERVICE_USER = "postgres"
PASSWORD = "userapi-test-pw"

_running: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process exited with {process.returncode} before opening port {port}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s")


def wait_for_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except Exception as exc:
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s ({last_error!r})")


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    for candidate in [*reversed(candidates), f"/usr/sbin/{name}"]:
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f"{name} not found (apt-get install postgresql pgbouncer redis-server)")


def _needs_service_user() -> bool:
    return os.geteuid() == 0


def _own_dir(path: Path) -> None:
    if _needs_service_user():
        shutil.chown(path, SERVICE_USER, SERVICE_USER)


def _spawn(
    args: list[str], log_path: Path, *, as_service_user: bool, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    user = SERVICE_USER if as_service_user and _needs_service_user() else None
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killed as a whole, immune to ^C
            user=user,
            group=user,
            env=env,
        )
    _running.append(process)
    return process


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    with contextlib.suppress(ValueError):
        _running.remove(process)
    return process.returncode


def stop_all() -> None:
    for process in list(_running):
        _stop(process, timeout=5)


def _workdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"userapi-{prefix}-"))
    path.chmod(0o755)
    return path


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = _workdir("redis")
        self._log = self.dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.dir)]  # fmt: skip
        self.process = _spawn(args, self._log, as_service_user=False)
        wait_for_port("127.0.0.1", self.port, 10, self.process)

    def kill(self) -> None:
        """Like a crash: no goodbye to connected clients."""
        if self.process is not None:
            _stop(self.process, signal.SIGKILL)

    def pause(self) -> None:
        """Black-holes Redis: connections stay open, nothing answers (SIGSTOP)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.resume()
            _stop(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A throwaway cluster (or, with USERAPI_TEST_POSTGRES_DSN, an existing server's admin DSN)."""

    def __init__(self) -> None:
        self.external_admin_dsn = os.environ.get("USERAPI_TEST_POSTGRES_DSN")
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = _workdir("postgres")
        if self.external_admin_dsn:
            self.port = int(self.external_admin_dsn.rsplit(":", 1)[1].split("/")[0])
        else:
            self.port = free_port()
            self._start_cluster()
        self._database_counter = 0
        self.create_role()
        self.create_database("userapi")

    def _start_cluster(self) -> None:
        _own_dir(self.dir)
        data = self.dir / "data"
        log = self.dir / "postgres.log"
        initdb = _spawn(
            [_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
             "--no-sync", "--locale=C"],
            log, as_service_user=True,
        )  # fmt: skip
        if initdb.wait(timeout=120) != 0:
            raise RuntimeError(f"initdb failed: {(self.dir / 'postgres.log').read_text()}")
        _running.remove(initdb)
        self.process = _spawn(
            [_binary("postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=300",
             "-c", "shared_buffers=64MB"],
            log, as_service_user=True,
        )  # fmt: skip
        wait_for_port("127.0.0.1", self.port, 30, self.process)
        # The port opens before the server accepts queries; psql retries until it does.
        deadline = time.monotonic() + 30
        while self.psql("SELECT 1", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not accept connections")
            time.sleep(0.1)

    def admin_dsn(self, database: str = "postgres") -> str:
        if self.external_admin_dsn:
            return self.external_admin_dsn.rsplit("/", 1)[0] + f"/{database}"
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "userapi", user: str = "userapi") -> str:
        return f"postgresql://{user}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def psql(
        self, sql: str, database: str = "postgres", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["psql", self.admin_dsn(database), "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result

    def create_role(self) -> None:
        self.psql(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'userapi') THEN "
            f"CREATE ROLE userapi LOGIN PASSWORD '{PASSWORD}'; END IF; END$$"
        )

    def create_database(self, name: str | None = None) -> str:
        if name is None:
            self._database_counter += 1
            name = f"userapi_test_{os.getpid()}_{self._database_counter}"
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}" OWNER userapi')
        return name

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGINT)  # "fast" shutdown
        shutil.rmtree(self.dir, ignore_errors=True)


class PgBouncer:
    """PgBouncer in transaction mode in front of `postgres`, as the sidecar runs in each pod."""

    def __init__(
        self,
        postgres: PostgresServer,
        *,
        pool_size: int = 5,
        max_db_connections: int = 10,
        port: int | None = None,
        start: bool = True,
    ) -> None:
        self.postgres = postgres
        self.port = port or free_port()
        self.dir = _workdir("pgbouncer")
        _own_dir(self.dir)
        (self.dir / "userlist.txt").write_text(f'"userapi" "{PASSWORD}"\n')
        host = f"host=127.0.0.1 port={postgres.port}"
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = {host}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.dir}\n"
            f"logfile = {self.dir}/pgbouncer.log\n"
            f"pidfile = {self.dir}/pgbouncer.pid\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {self.dir}/userlist.txt\n"
            "admin_users = userapi\n"
            "stats_users = userapi\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            f"max_db_connections = {max_db_connections}\n"
            "max_client_conn = 2000\n"
            "server_reset_query =\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
        )
        for name in ("userlist.txt", "pgbouncer.ini"):
            _own_dir(self.dir / name)
        self._log = self.dir / "stdout.log"
        self.process: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    def start(self) -> None:
        self.process = _spawn(
            [_binary("pgbouncer"), str(self.dir / "pgbouncer.ini")], self._log, as_service_user=True
        )
        wait_for_port("127.0.0.1", self.port, 15, self.process)

    def dsn(self, database: str = "userapi") -> str:
        return f"postgresql://userapi:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def show(self, what: str) -> list[dict[str, str]]:
        """`SHOW <what>` on the admin console (simple query protocol only, hence psql)."""
        result = subprocess.run(
            ["psql", self.dsn("pgbouncer"), "-F", "\t", "-Ac", f"SHOW {what}"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        lines = [line for line in result.stdout.splitlines() if "\t" in line]
        header = lines[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]

    def kill(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGKILL)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, signal.SIGINT)
        shutil.rmtree(self.dir, ignore_errors=True)


class ServiceProcess:
    """A userapi process (`userapi serve …`, `userapi emulator …`) with its output in a file."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.dir = _workdir("service")
        self.log_path = self.dir / "output.log"
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dir),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
        self.process = _spawn(args, self.log_path, as_service_user=False, env={**base, **env})

    def wait_healthy(self, url: str, timeout: float) -> None:
        try:
            wait_for_http(url, timeout, self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- output ---\n{self.log_text()}") from None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 15) -> int:
        return _stop(self.process, signal.SIGTERM, timeout)

    def kill(self) -> None:
        _stop(self.process, signal.SIGKILL)
