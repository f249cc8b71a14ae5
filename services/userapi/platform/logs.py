"""JSON log lines on stdout: one per request, plus warnings and errors, each with its request id."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, TextIO

from userapi.platform import context

# color_message: uvicorn's ANSI-coloured copy of the message, noise in JSON.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}
# Built once: json.dumps with arguments builds a new encoder per call, per log line.
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode

# Set by platform/telemetry.py while telemetry is on: the current (trace id, span id), or None.
trace_ids: Callable[[], tuple[str, str] | None] | None = None


def _stamp(created: float, formatter: JSONFormatter) -> str:
    second = int(created)
    if second != formatter._second:
        formatter._second = second
        formatter._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{formatter._stamp}.{int((created - second) * 1000):03d}Z"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, then the extras.

    It runs once per request, so it is kept lean: the time prefix is formatted once a second
    and the extras are found by a set difference, not by testing every attribute."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _stamp(record.created, self),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = context.current()
        if ctx is not None:
            line["request_id"] = ctx.request_id
            if ctx.server_request_id != ctx.request_id:  # the caller chose request_id
                line["server_request_id"] = ctx.server_request_id
        if trace_ids is not None and (ids := trace_ids()) is not None:
            line["trace_id"], line["span_id"] = ids
        attributes = record.__dict__
        if attributes.keys() - _RESERVED:
            for key, value in attributes.items():
                if key not in _RESERVED and key[0] != "_":
                    line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _ENCODE(line)


class _InOrderHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stdout's handler for every other line: the request lines held so far go out first, so
    that the log reads in the order things happened."""

    def emit(self, record: logging.LogRecord) -> None:
        if threading.get_ident() == _lines.thread:
            _lines.flush()
        super().emit(record)


def configure(level: str) -> None:
    # The logging module's documented optimisations: these LogRecord fields are never output,
    # and finding the caller's file and line walks the stack on every call.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _InOrderHandler(sys.stdout)
    handler.setFormatter(JSONFormatter())
    _lines.stream = sys.stdout
    _lines.thread = threading.get_ident()
    # Lines still held when the process ends (no event-loop turn left to write them).
    atexit.unregister(_lines.flush)
    atexit.register(_lines.flush)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own loggers propagate to ours; its access log is replaced by the request log.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request at INFO; the request log already reports Auth0 time.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


_request_log = logging.getLogger("userapi.request")


class _RequestLines:
    """The one line per request, written straight to stdout by `request()`.

    Through `logging` the line cost about 50 µs of a cached read's CPU (a LogRecord, the
    handler's lock, the formatter's dict, an encoder pass, a flush): a third of what the
    FastAPI hello app spends on a whole request. The line is the same JSON, in the same key
    order, as JSONFormatter writes: its fixed parts are built once, the values encoded by
    json's C string encoder.

    Lines are held until the end of the event-loop turn, then written together: one write(2)
    for every request that finished in the turn. Handed to stdout one by one, each line was a
    write(2) of its own, however the stream is flushed: the image (and the test harness) set
    PYTHONUNBUFFERED, which makes stdout write through. Each such call costs CPU, and blocks the
    loop (every request in flight) whenever the log's reader or the disk is slow."""

    def __init__(self) -> None:
        self.stream: TextIO | None = None  # set by configure(): JSON on stdout is ours
        self.formatter = JSONFormatter()
        # The thread whose event loop writes the lines: the only one that may flush them.
        self.thread: int | None = None
        self._held: list[str] = []

    def flush(self) -> None:
        held, self._held = self._held, []
        if held and self.stream is not None:
            # stdout closed or broken: a log line is never worth a failed request.
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("".join(held))
                self.stream.flush()

    def write(self, line: str) -> None:
        assert self.stream is not None
        self._held.append(line)
        if len(self._held) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: written at once
                self.flush()


_lines = _RequestLines()


def _json(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def request(
    endpoint: str,
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    ctx: context.RequestContext,
) -> None:
    """Logs the request line (logger `userapi.request`, INFO) with its fields."""
    if not _request_log.isEnabledFor(logging.INFO):
        return
    auth0_ms = round(ctx.auth0_ms, 2)
    if _lines.stream is None:  # logging not configured by us (in-process tests): as any line
        extra = {
            "endpoint": endpoint,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "cache": ctx.cache,
            "auth0_ms": auth0_ms,
            "auth0_calls": ctx.auth0_calls,
            "subject": ctx.subject,
        }
        _request_log.info("request", extra=extra)
        return
    ids = ""
    if ctx.server_request_id != ctx.request_id:
        ids = f',"server_request_id":{_quote(ctx.server_request_id)}'
    if trace_ids is not None and (trace := trace_ids()) is not None:
        ids += f',"trace_id":{_quote(trace[0])},"span_id":{_quote(trace[1])}'
    # Floats as json writes them (float.__repr__), so the line parses to the same values.
    _lines.write(
        f'{{"time":"{_stamp(time.time(), _lines.formatter)}","level":"info",'
        f'"logger":"userapi.request","message":"request","request_id":{_quote(ctx.request_id)}'
        f'{ids},"endpoint":{_quote(endpoint)},"method":{_quote(method)},"path":{_quote(path)},'
        f'"status":{status},"duration_ms":{duration_ms!r},"cache":{_json(ctx.cache)},'
        f'"auth0_ms":{auth0_ms!r},"auth0_calls":{ctx.auth0_calls},'
        f'"subject":{_json(ctx.subject)}}}\n'
    )
