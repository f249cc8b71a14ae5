"""The process registry every harness server starts through: `spawn` and `stop_process`, work
directories, free ports, readiness waits and the executables they run.

Every child runs in its own session (process group): a ^C in the terminal does not reach it
half-way, and stopping it can kill whatever it forked too. Everything started here is recorded,
so `stop_all()` (pytest_sessionfinish, atexit, SIGTERM/SIGHUP) leaves no process and no temporary
directory behind, whatever a caller did; a watchdog process does the same if the caller dies
without running any of those (SIGKILL, os._exit). USERAPI_TEST_KEEP_TMP=1 keeps the directories
(logs, configuration) for a post-mortem.

Importing this module starts nothing: the watchdog and the atexit hook come with the first
process or directory registered.

As root, servers that refuse to run as root (initdb, postgres, pgbouncer) run as the `postgres`
user: `spawn(..., service_user=True)`.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

# Servers that refuse to run as root (PostgreSQL, PgBouncer) run as this user when we are root.
SERVICE_USER = "postgres"
HOST = "127.0.0.1"
# The `userapi` console script of the environment running the harness, not whatever is on PATH.
USERAPI = str(Path(sys.executable).parent / "userapi")


def code_env() -> dict[str, str]:
    """PYTHONPATH, if the run sets one: it is how a checkout other than the one the virtualenv
    installed (a git worktree) puts its own code under test in the processes USERAPI starts."""
    path = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": path} if path else {}


# Reentrant: the SIGTERM handler runs stop_all() on the main thread, possibly inside `with _lock`.
_lock = threading.RLock()
_running: list[subprocess.Popen[bytes]] = []
_workdirs: list[Path] = []
_watchdog: subprocess.Popen[bytes] | None = None
_exit_hook_installed = False
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


def as_service_user() -> bool:
    """Whether servers that refuse root run as SERVICE_USER (we are root)."""
    return os.geteuid() == 0


def _temp_base() -> str | None:
    """Where work directories go: the service user must be able to reach its own, and as root
    TMPDIR may sit under a 0700 home directory."""
    base = Path(tempfile.gettempdir()).resolve()
    if not as_service_user():
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
    global _watchdog, _exit_hook_installed
    if not _exit_hook_installed:  # with the first thing to clean up, not at import
        atexit.register(_at_exit)
        _exit_hook_installed = True
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


def new_workdir(prefix: str, *, service_user: bool = False) -> Path:
    """A fresh directory (the service user's, if asked) that `stop_all()` removes."""
    path = Path(tempfile.mkdtemp(prefix=f"userapi-{prefix}-", dir=_temp_base()))
    path.chmod(0o755)
    if service_user and as_service_user():
        shutil.chown(path, SERVICE_USER, SERVICE_USER)
    with _lock:
        _workdirs.append(path)
        if not os.environ.get("USERAPI_TEST_KEEP_TMP"):
            _tell_watchdog(f"d+ {path}")
    return path


def remove_workdir(path: Path) -> None:
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
    user = SERVICE_USER if service_user and as_service_user() else None
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


def spawn_server(
    args: Sequence[str],
    log_path: Path,
    port: int,
    timeout: float,
    *,
    service_user: bool = False,
    cwd: Path | None = None,
    log_text: Callable[[], str] | None = None,
) -> subprocess.Popen[bytes]:
    """`spawn` a server, then wait until it accepts connections on `port`; if it never does, a
    RuntimeError carrying its log (`log_text()`, else `log_path`'s text)."""
    process = spawn(args, log_path, service_user=service_user, cwd=cwd)
    try:
        wait_for_port(HOST, port, timeout, process)
    except (RuntimeError, TimeoutError) as exc:
        if log_text is not None:
            text = log_text()
        else:
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
        raise RuntimeError(f"{exc}\n{text}") from None
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
        remove_workdir(path)


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


class ServiceProcess:
    """A server process (`userapi serve ...`, `userapi emulator ...`, a bench yardstick) with its
    output in a file.

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
        self.dir = new_workdir("service")
        self.log_path = self.dir / "output.log"
        base = dict(os.environ) if inherit_env else {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dir),
            "LANG": "C.UTF-8",
            **code_env(),
        }  # fmt: skip
        base["PYTHONUNBUFFERED"] = "1"  # so log_text() shows what happened up to now
        if "PYTHONPATH" in os.environ:  # a worktree's code, not the venv's editable install
            base.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
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
