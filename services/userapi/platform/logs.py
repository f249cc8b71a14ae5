"""JSON log lines on stdout: one per request, plus warnings and errors, each with its request id."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from userapi.platform import context

# color_message: uvicorn's ANSI-coloured copy of the message, noise in JSON.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}
# Built once: json.dumps with arguments builds a new encoder per call, per log line.
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode

# Set by platform/telemetry.py while telemetry is on: the current (trace id, span id), or None.
trace_ids: Callable[[], tuple[str, str] | None] | None = None


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, then the extras.

    It runs once per request, so it is kept lean: the time prefix is formatted once a second
    and the extras are found by a set difference, not by testing every attribute."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        line: dict[str, Any] = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
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


def configure(level: str) -> None:
    # The logging module's documented optimisations: these LogRecord fields are never output,
    # and finding the caller's file and line walks the stack on every call.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JSONFormatter())
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
