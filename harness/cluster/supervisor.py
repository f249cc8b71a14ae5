"""The control plane's processes, recorded by pid and start time in the state directory, so that
`down` stops exactly what `up` started (and never a recycled pid)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness import processes


def start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited; a parent that is not waiting (say, init) has not reaped it
        return None
    return fields[19]  # field 22: start time in clock ticks since boot


def recorded(state: Path) -> Iterator[tuple[str, int]]:
    """(name, pid) of every process this state directory started that is still that process."""
    for record in sorted((state / "pids").glob("*")):
        pid, started = record.read_text().split()
        if start_time(int(pid)) == started:
            yield record.name, int(pid)


def spawn(
    state: Path,
    netns: str,
    name: str,
    command: Sequence[str],
    env: dict[str, str],
    *,
    enter: Sequence[str] | None = None,
) -> int:
    """Start `command` inside the namespace (`ip netns exec`, or the `enter` prefix given: the
    node's processes join its holder with nsenter) and record it; returns its pid."""
    args = [*(enter if enter is not None else ["ip", "netns", "exec", netns]), *command]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    log_path = state / "logs" / f"{name}.log"
    if (state / "detached").exists():  # `make cluster`: outlives this process
        with log_path.open("ab") as log:
            pid = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, cwd=state,
            ).pid  # fmt: skip
    else:  # the tests: the registry stops it at exit, its watchdog even if pytest is killed
        pid = processes.spawn(args, log_path, env=env, cwd=state).pid
    (state / "pids" / name).write_text(f"{pid} {start_time(pid)}\n")
    return pid


def alive(state: Path, name: str) -> bool:
    return any(n == name for n, _ in recorded(state))


def pid_of(state: Path, name: str) -> int | None:
    return next((pid for n, pid in recorded(state) if n == name), None)


def stop(state: Path, names: Sequence[str] | None = None, grace: float = 5) -> None:
    """Stop the recorded processes `names` (all when None) together, and forget them."""
    # With their start times: pids wrap at 32768 on these machines, and a pid freed by the
    # SIGTERM can be another process's (and its group's) by the time of the SIGKILL.
    running = [(pid, start_time(pid)) for n, pid in recorded(state) if names is None or n in names]
    # SIGTERM to all at once, then SIGKILL whatever is left after 5 s: the data is throwaway, and
    # the API server would otherwise wait out its open watches.
    for pid, _ in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(start_time(p) == began for p, began in running) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, began in running:
        if start_time(pid) == began:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    for record in (state / "pids").glob("*"):
        if names is None or record.name in names:
            record.unlink()
