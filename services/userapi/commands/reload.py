"""`userapi reload`: the skaffold dev image's server, one endpoint that reloads on every edit.

uvicorn --reload starts a brand-new interpreter for each change (multiprocessing's spawn): on
the real node the six endpoints' pods did so at once, each importing FastAPI, pydantic, redis,
cryptography... again on two shared cores, and that was most of an edit's 7.6 s. Here a
long-lived parent imports those third-party modules once (PRELOAD), binds the port once, and on
each change forks a child that imports only userapi, from the files as they are now, and
serves the socket it inherited:

- The parent runs none of userapi's code. It has imported only the modules on its own way in
  (the package, `commands`, `commands.cli`, this one), and each child drops every userapi
  module before it builds the app, so a synced file is read whichever module it is.
- The new child starts while the old one still serves; the old one is told to stop once the
  new one is ready. The port never closes, so no request is refused during a reload, and an
  edit that fails to start (its traceback is in the log) leaves the old one serving.
- SIGTERM or SIGINT stops the children, then the parent. A child whose parent died stops too.

The parent reads PORT itself (Settings lives in userapi), and a change to this module, the
one code the children do not re-read, needs a new image.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import uvicorn

# What the children import that is not userapi's, heaviest first: imported once by the parent,
# so a fork starts with them loaded. tests/unit/test_reload.py fails when an endpoint comes to
# import a third-party module missing here.
PRELOAD = (
    "fastapi",
    "fastapi.security",
    "fastapi.openapi.utils",
    "pydantic",
    "pydantic.v1",  # fastapi checks every model against it
    "pydantic_settings",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "cryptography.x509",
    "jwt",
    "redis.asyncio",
    "httpx",
    "asyncpg",
    "luqum.parser",
    "opentelemetry.trace",
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.auto",
)
# s between two looks at the files' modification times (a look at the package's 66 files
# costs 0.35 ms).
INTERVAL = 0.1
# s a child told to stop may take (its in-flight requests: SHUTDOWN_TIMEOUT_SECONDS, 10 by
# default) before it is killed.
STOP_GRACE = 30.0
_DRAIN = 0.2  # s between an app process's last accept and its closing idle connections
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class Child:
    pid: int
    ready: int | None  # the read end of its ready pipe, until it is ready or has died
    stop_by: float | None = None  # when it is killed, once told to stop


def preload() -> None:
    for name in PRELOAD:
        importlib.import_module(name)


def run(host: str, port: int, watch: Path) -> None:
    """Serve USERAPI_ENDPOINT on host:port until SIGTERM or SIGINT, with a new child for each
    change of a *.py file under `watch`."""
    preload()
    listener = socket.create_server(
        (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=2048
    )
    stop: list[int] = []
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    _say(f"watching {watch}, serving on {host}:{port}")
    files = _snapshot(watch)
    serving: Child | None = None
    starting: Child | None = _fork(listener, host, port)
    stopping: list[Child] = []
    while not stop:
        waiting = [starting.ready] if starting is not None and starting.ready is not None else []
        readable, _, _ = select.select(waiting, [], [], INTERVAL)
        if starting is not None and starting.ready in readable:
            # One byte once it serves; nothing (end of file) if it died before.
            started = os.read(starting.ready, 1) != b""
            os.close(starting.ready)
            starting.ready = None
            if started:
                _say(f"app process [{starting.pid}] ready")
                if serving is not None:
                    stopping.append(_stop(serving))
                serving = starting
            else:
                kept = f"[{serving.pid}] still serves" if serving else "nothing serves"
                _say(f"app process [{starting.pid}] did not start; {kept}")
            starting = None
        for pid, status in _reap():
            if serving is not None and pid == serving.pid:
                _say(f"app process [{pid}] exited ({status}); waiting for a change")
                serving = None
            stopping = [child for child in stopping if child.pid != pid]
        for child in stopping:
            if child.stop_by is not None and time.monotonic() > child.stop_by:
                _signal(child.pid, signal.SIGKILL)
        if (now := _snapshot(watch)) != files:
            changed = sorted(set(now.items()) ^ set(files.items()))
            files = now
            _say(f"{os.path.relpath(changed[0][0], watch)} changed; starting a new app process")
            if starting is not None:  # not ready yet, and already out of date
                stopping.append(_stop(starting))
            starting = _fork(listener, host, port)
    _say(f"stopping on signal {stop[0]}")
    for left in (serving, starting):
        if left is not None:
            stopping.append(_stop(left))
    deadline = time.monotonic() + STOP_GRACE
    pids = {child.pid for child in stopping}
    while pids and time.monotonic() < deadline:
        pids -= {pid for pid, _ in _reap()}
        time.sleep(0.05)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    listener.close()


def _fork(listener: socket.socket, host: str, port: int) -> Child:
    # A fork copies the calling thread only: any other would be lost half-way in the child.
    if threading.active_count() != 1:
        raise RuntimeError("userapi reload: a preloaded module started a thread")
    ready_r, ready_w = os.pipe()
    parent = os.getpid()
    # Blocked across the fork: a stop signal must reach the child's own handler, never a copy
    # of the parent's.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        _child(listener, ready_w, parent, host, port)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    os.close(ready_w)
    _say(f"app process [{pid}] starting")
    return Child(pid, ready_r)


def _child(listener: socket.socket, ready: int, parent: int, host: str, port: int) -> NoReturn:
    code = 1
    try:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        for name in [n for n in sys.modules if n == "userapi" or n.startswith("userapi.")]:
            del sys.modules[name]
        importlib.invalidate_caches()  # a synced file may be new, in a directory seen before
        from userapi.commands.asgi import create
        from userapi.platform.startup import load_settings, uvicorn_config

        config = uvicorn_config(create(), host, port, load_settings())
        _Server(config, ready, parent).run(sockets=[listener])
        code = 0
    except SystemExit as exc:  # a configuration error, or uvicorn's failed start-up
        code = exc.code if isinstance(exc.code, int) else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # never back into the parent's loop


class _Server(uvicorn.Server):
    """uvicorn's server, reporting to the parent once it serves, and stopping if it dies."""

    def __init__(self, config: uvicorn.Config, ready: int, parent: int) -> None:
        super().__init__(config)
        self._ready = ready
        self._parent = parent

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            os.write(self._ready, b"\n")
            os.close(self._ready)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn closes every connection with no request in it yet, even one accepted an
        # instant before, whose request is on its way: that client gets no answer. So stop
        # accepting first (the next process accepts instead), and let those requests arrive.
        for server in self.servers:
            server.close()
        await asyncio.sleep(_DRAIN)
        await super().shutdown(sockets)

    async def on_tick(self, counter: int) -> bool:
        # Orphaned (the parent was killed): nothing would ever stop this process.
        if os.getppid() != self._parent:
            self.should_exit = True
        return await super().on_tick(counter)


def _stop(child: Child) -> Child:
    _say(f"app process [{child.pid}] stopping")
    _signal(child.pid, signal.SIGTERM)
    if child.ready is not None:
        os.close(child.ready)
        child.ready = None
    child.stop_by = time.monotonic() + STOP_GRACE
    return child


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap() -> Iterator[tuple[int, str]]:
    """Every child that has ended, with how. Any child: as a container's PID 1 the parent is
    also the reaper of processes it never started."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        yield pid, f"signal {-code}" if code < 0 else f"exit code {code}"


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    stat = os.stat(path)
                    found[path] = (stat.st_mtime_ns, stat.st_size)
    return found


def _say(message: str) -> None:
    print(f"userapi reload: {message}", file=sys.stderr, flush=True)
