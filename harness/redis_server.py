"""redis-server on a free port, without persistence, with the failures tests need (kill, pause)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator

from harness.processes import (
    HOST,
    binary,
    free_port,
    new_workdir,
    spawn_server,
    stop_process,
)


class RedisServer:
    """redis-server without persistence on a free port; `kill()`, `pause()` simulate failures."""

    def __init__(self, *, port: int | None = None, start: bool = True) -> None:
        self.port = port or free_port()
        self.dir = new_workdir("redis")
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
        self.process = spawn_server(args, self._log, self.port, 10, cwd=self.dir)

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
