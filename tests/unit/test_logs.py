"""The JSON log line: what every request and every warning writes to stdout."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from userapi.platform import context
from userapi.platform.logs import JSONFormatter


def _record(created: float, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "userapi.request", "levelname": "INFO", "msg": "request %s", "args": ("done",)}
    )
    record.created, record.msecs = created, (created % 1) * 1000
    record.__dict__.update(extra)
    return record


def test_a_line_has_the_fixed_fields_then_the_extras_in_order() -> None:
    token = context.bind(context.RequestContext("req-1"))
    try:
        line = JSONFormatter().format(_record(0.25, status=200, path=Path("/users/me")))
    finally:
        context.reset(token)
    assert json.loads(line) == {
        "time": "1970-01-01T00:00:00.250Z",
        "level": "info",
        "logger": "userapi.request",
        "message": "request done",
        "request_id": "req-1",
        "status": 200,
        "path": "/users/me",  # not JSON itself: written as its str()
    }
    assert list(json.loads(line))[-2:] == ["status", "path"]


def test_the_time_follows_each_record_across_seconds() -> None:
    formatter = JSONFormatter()
    times = [
        json.loads(formatter.format(_record(t)))["time"] for t in (59.5, 59.75, 60.0, 3600.125)
    ]
    assert times == [
        "1970-01-01T00:00:59.500Z",
        "1970-01-01T00:00:59.750Z",
        "1970-01-01T00:01:00.000Z",
        "1970-01-01T01:00:00.125Z",
    ]


def test_an_exception_is_in_the_line_not_beside_it() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("userapi").makeRecord(
            "userapi", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    line = JSONFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "error"
    assert "ValueError: boom" in parsed["exception"]
    assert "request_id" not in parsed  # no request is bound
