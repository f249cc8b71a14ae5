"""Real servers on free ports, started and stopped by the tests themselves.

Every child runs in its own session (process group): a ^C in the terminal does not reach it
half-way, and stopping it can kill whatever it forked too. Everything started here is recorded,
so `stop_all()` (pytest_sessionfinish, atexit, SIGTERM/SIGHUP) leaves no process and no temporary
directory behind, whatever a test did; a watchdog process does the same if pytest dies without
running any of those (SIGKILL, os._exit). USERAPI_TEST_KEEP_TMP=1 keeps the directories (logs,
configuration) for a post-mortem.

As root, initdb, postgres and pgbouncer (which refuse to run as root) run as the `postgres` user.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import functools
import io
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

# PostgreSQL and PgBouncer refuse to run as root; CI runs as root, so they run as this user.
SERVICE_USER = "postgres"
ROLE = "userapi"
PASSWORD = "userapi-test-pw"
HOST = "127.0.0.1"
# An existing server's admin DSN (a superuser, or a role with CREATEDB and CREATEROLE), e.g.
# postgresql://postgres:secret@127.0.0.1:5432/postgres. With it no cluster is initialised: each
# run gets uniquely named databases there (dropped at the end) and the `userapi` role, created if
# missing, gets the test password. Point it at a throwaway server only.
EXTERNAL_POSTGRES_ENV = "USERAPI_TEST_POSTGRES_DSN"

# Reentrant: the SIGTERM handler runs stop_all() on the main thread, possibly inside `with _lock`.
_lock = threading.RLock()
_running: list[subprocess.Popen[bytes]] = []
_workdirs: list[Path] = []
_watchdog: subprocess.Popen[bytes] | None = None
# urllib honours http_proxy; a CI proxy must never see requests to our own 127.0.0.1 servers.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
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
        time.sleep(0.02)
    raise TimeoutError(f"{host}:{port} did not open within {timeout}s")


def wait_for_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before serving {url}")
        try:
            with _http.open(url, timeout=1) as response:
                if response.status == 200:
                    return
        except Exception as exc:  # refused, reset, 503 while starting: all mean "not yet"
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s ({last_error!r})")


def userapi_executable() -> str:
    """The `userapi` console script of the environment running pytest (not whatever is on PATH)."""
    path = Path(sys.executable).parent / "userapi"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make install` (pip install -e '.[test]')")
    return str(path)


# --- binaries ----------------------------------------------------------------------------------


def _version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)


@functools.cache
def postgres_bindir() -> Path:
    """initdb and postgres from one installation: a data directory only starts under the major
    version that created it, and a machine may hold several."""
    candidates: list[Path] = []
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    installed = [Path(p) for p in Path("/usr/lib/postgresql").glob("*/bin")]
    candidates += sorted(installed, key=_version_key, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres")):
            return bindir
    raise FileNotFoundError("PostgreSQL not found: apt-get install postgresql")


@functools.cache
def binary(name: str) -> str:
    if name in ("initdb", "postgres", "pg_ctl"):
        return str(postgres_bindir() / name)
    found = shutil.which(name)
    if found:
        return found
    # A non-root PATH often lacks the sbin directories, where Debian puts pgbouncer.
    extra = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"]
    with contextlib.suppress(FileNotFoundError):
        extra.append(str(postgres_bindir()))  # psql, when only the server package is installed
    for directory in extra:
        candidate = Path(directory) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(f"{name} not found: apt-get install redis-server postgresql pgbouncer")


# --- processes ---------------------------------------------------------------------------------


def _as_service_user() -> bool:
    return os.geteuid() == 0


def _temp_base() -> str | None:
    """Where work directories go: the service user must be able to reach its own, and as root
    TMPDIR may sit under a 0700 home directory."""
    base = Path(tempfile.gettempdir()).resolve()
    if not _as_service_user():
        return None
    for directory in (base, *base.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            return "/tmp"
    return None


# --- cleanup ----------------------------------------------------------------------------------

# atexit and signal handlers do not run when pytest is SIGKILLed or leaves through os._exit()
# (pytest-timeout's thread method, an OOM kill). This process outlives it: it learns of every
# process group and directory through a pipe, and when the pipe reaches EOF, that is, when pytest
# is gone however it went, it kills and removes whatever is still registered.
_WATCHDOG = """
import os, shutil, signal, sys
groups, dirs = set(), set()
for line in sys.stdin:
    op, _, value = line.rstrip("\\n").partition(" ")
    registry = dirs if op.startswith("d") else groups
    (registry.add if op.endswith("+") else registry.discard)(value)
for pgid in groups:
    try:
        os.killpg(int(pgid), signal.SIGKILL)
    except OSError:
        pass
for path in dirs:
    shutil.rmtree(path, ignore_errors=True)
"""


def _tell_watchdog(message: str) -> None:
    """Registers (`+ pgid`, `d+ path`) or forgets (`- pgid`, `d- path`); call with _lock held."""
    global _watchdog
    if _watchdog is None or _watchdog.poll() is not None:
        _watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a ^C for pytest must not take the safety net first
        )
    assert _watchdog.stdin is not None
    with contextlib.suppress(OSError):
        _watchdog.stdin.write(f"{message}\n".encode())
        _watchdog.stdin.flush()


def _close_watchdog() -> None:
    global _watchdog
    if _watchdog is not None:
        with contextlib.suppress(OSError):
            assert _watchdog.stdin is not None
            _watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            _watchdog.wait(timeout=5)
        _watchdog = None


def _workdir(prefix: str, *, service_user: bool = False) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"userapi-{prefix}-", dir=_temp_base()))
    path.chmod(0o755)
    if service_user and _as_service_user():
        shutil.chown(path, SERVICE_USER, SERVICE_USER)
    with _lock:
        _workdirs.append(path)
        if not os.environ.get("USERAPI_TEST_KEEP_TMP"):
            _tell_watchdog(f"d+ {path}")
    return path


def _remove_workdir(path: Path) -> None:
    if os.environ.get("USERAPI_TEST_KEEP_TMP"):
        return
    shutil.rmtree(path, ignore_errors=True)
    with _lock:
        if path in _workdirs:
            _workdirs.remove(path)
            _tell_watchdog(f"d- {path}")


def spawn(
    args: Sequence[str],
    log_path: Path,
    *,
    service_user: bool = False,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Starts `args` in a new session with stdout and stderr appended to `log_path`."""
    user = SERVICE_USER if service_user and _as_service_user() else None
    with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,  # or it would keep root's supplementary groups
            env=None if env is None else dict(env),
            cwd=cwd,
        )
    with _lock:
        _running.append(process)
        _tell_watchdog(f"+ {process.pid}")  # start_new_session: its pid is its group's id
    return process


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process(
    process: subprocess.Popen[bytes],
    sig: int = signal.SIGTERM,
    timeout: float = 10,
    *,
    whole_group: bool = True,
) -> int:
    """Sends `sig` (to the group, or to the leader alone when it shuts its children down itself),
    SIGKILLs the group after `timeout`, and always SIGKILLs what is left of the group."""
    if process.poll() is None:
        if whole_group:
            _signal_group(process.pid, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)
        # A stopped (SIGSTOPped) process only acts on the signal once it runs again.
        _signal_group(process.pid, signal.SIGCONT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    _signal_group(process.pid, signal.SIGKILL)  # children the leader left behind
    with _lock:
        if process in _running:
            _running.remove(process)
            _tell_watchdog(f"- {process.pid}")
    return process.returncode


def stop_all() -> None:
    """Kills every process started here and removes every work directory; idempotent."""
    with _lock:
        processes = list(_running)
        workdirs = list(_workdirs)
    for process in processes:
        stop_process(process, timeout=5)
    for path in workdirs:
        _remove_workdir(path)


def install_signal_cleanup() -> None:
    """On SIGTERM/SIGHUP (a cancelled CI job, a closed terminal) stop everything, then die of the
    same signal. Only where nobody else handles it, and only from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop_all()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, handler)


def _at_exit() -> None:
    stop_all()
    _close_watchdog()


atexit.register(_at_exit)


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


# --- servers -----------------------------------------------------------------------------------


class RedisServer:
    """redis-server without persistence on a free port; `kill()`, `pause()` simulate failures."""

    def __init__(self, *, port: int | None = None, start: bool = True) -> None:
        self.port = port or free_port()
        self.dir = _workdir("redis")
        self._log = self.dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._resume_timer: threading.Timer | None = None
        self._closed = False
        if start:
            self.start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Starts (or, after `kill()`/`stop()`, restarts) on the same port, empty."""
        if self.running:
            raise RuntimeError("redis-server is already running")
        self._closed = False
        args = [binary("redis-server"), "--port", str(self.port), "--bind", HOST,
                "--save", "", "--appendonly", "no", "--dir", str(self.dir)]  # fmt: skip
        self.process = spawn(args, self._log, cwd=self.dir)
        try:
            wait_for_port(HOST, self.port, 10, self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{self._log.read_text(errors='replace')}") from None

    def kill(self) -> None:
        """Like a crash: no goodbye to connected clients."""
        self._cancel_resume()
        if self.process is not None:
            stop_process(self.process, signal.SIGKILL)

    def pause(self, seconds: float | None = None) -> None:
        """Black-holes Redis: connections stay open and accept bytes, nothing answers (SIGSTOP).
        With `seconds`, it resumes by itself after that long."""
        if not self.running:
            raise RuntimeError("redis-server is not running")
        assert self.process is not None
        self._cancel_resume()
        os.kill(self.process.pid, signal.SIGSTOP)
        if seconds is not None:
            self._resume_timer = threading.Timer(seconds, self.resume)
            self._resume_timer.daemon = True
            self._resume_timer.start()

    def resume(self) -> None:
        self._cancel_resume()
        if self.running:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def ensure_running(self) -> None:
        """Undoes whatever a test did (pause, kill), so the next test gets a working server."""
        if self._closed:
            return
        self.resume()
        if not self.running:
            self.start()

    def _cancel_resume(self) -> None:
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None

    def stop(self) -> None:
        """A clean shutdown; `start()` may follow. The directory goes at the end of the session."""
        self._closed = True
        self._cancel_resume()
        if self.process is not None:
            stop_process(self.process)


class PostgresServer:
    """A throwaway cluster tuned for speed over durability, with the `userapi` role (LOGIN, the
    test password) and a database it owns; or, with USERAPI_TEST_POSTGRES_DSN, an existing server
    on which only uniquely named databases are created."""

    def __init__(self, *, admin_dsn: str | None = None, max_connections: int = 200) -> None:
        self.max_connections = max_connections
        self._external_dsn = admin_dsn or os.environ.get(EXTERNAL_POSTGRES_ENV) or None
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = _workdir("postgres", service_user=True)
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
             "-c", "shared_buffers=64MB", "-c", "log_min_messages=warning"],
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
        _remove_workdir(self.dir)


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
        self.dir = _workdir("pgbouncer", service_user=True)
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
        if _as_service_user():
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
        self.process = spawn(
            [binary("pgbouncer"), str(self.config)], self._log, service_user=True, cwd=self.dir
        )
        try:
            wait_for_port(HOST, self.port, 15, self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{self.log_text()}") from None

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


class ServiceProcess:
    """A userapi process (`userapi serve ...`, `userapi emulator ...`) with its output in a file.

    The environment is `env` over a minimal base (PATH, HOME, LANG): nothing leaks in from the
    developer's shell unless `inherit_env` is set.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        inherit_env: bool = False,
        cwd: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.dir = _workdir("service")
        self.log_path = self.dir / "output.log"
        base = dict(os.environ) if inherit_env else {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dir),
            "LANG": "C.UTF-8",
        }  # fmt: skip
        base["PYTHONUNBUFFERED"] = "1"  # so log_text() shows what happened up to now
        self.process = spawn(self.args, self.log_path, env={**base, **(env or {})}, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def wait_healthy(self, url: str, timeout: float = 30) -> None:
        try:
            wait_for_http(url, timeout, self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n--- output of {self.args} ---\n{self.log_text()}") from None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM (a graceful shutdown), SIGKILL after `timeout`; returns the exit code."""
        return stop_process(self.process, signal.SIGTERM, timeout)

    def kill(self) -> int:
        return stop_process(self.process, signal.SIGKILL)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()
