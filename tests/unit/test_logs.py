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


def test_the_request_line_is_the_formatters_line(monkeypatch) -> None:
    """logs.request() writes the line itself, for speed: the same JSON, in the same order, as
    the formatter makes of the same record, awkward values included."""
    import io

    from userapi.platform import logs

    stream = io.StringIO()
    monkeypatch.setattr(logs._lines, "stream", stream)
    request_log = logging.getLogger("userapi.request")
    monkeypatch.setattr(request_log, "level", logging.INFO)
    monkeypatch.setattr(request_log, "_cache", {})
    ctx = context.RequestContext('caller"id\n', "server-id", cache=None, subject="auth0|é\u2028")
    ctx.add_auth0_time(0.0123)
    token = context.bind(ctx)
    try:
        logs.request("get-user", "GET", "/users/a%7Cb\\", 404, 1.25, ctx)
        extra = {
            "endpoint": "get-user",
            "method": "GET",
            "path": "/users/a%7Cb\\",
            "status": 404,
            "duration_ms": 1.25,
            "cache": None,
            "auth0_ms": 12.3,
            "auth0_calls": 1,
            "subject": "auth0|é\u2028",
        }
        record = _record(0.0, **extra)
        record.msg, record.args = "request", ()
        expected = JSONFormatter().format(record)
    finally:
        context.reset(token)
    written = stream.getvalue()
    assert written.endswith("\n")
    assert written.count("\n") == 1
    line, formatted = json.loads(written), json.loads(expected)
    line.pop("time"), formatted.pop("time")
    formatted["logger"] = line["logger"]  # _record's name is the same logger
    assert list(line.items()) == list(formatted.items())


class _Writes:
    """A stream that records each write it is handed."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_request_lines_of_one_loop_turn_are_one_write_and_keep_their_order(monkeypatch) -> None:
    """stdout writes through (PYTHONUNBUFFERED): request lines are held until the event-loop
    turn ends and written together, and any other line logged meanwhile goes out after them."""
    import asyncio
    import threading

    from userapi.platform import logs

    stream = _Writes()
    monkeypatch.setattr(logs._lines, "stream", stream)
    monkeypatch.setattr(logs._lines, "thread", threading.get_ident())
    request_log = logging.getLogger("userapi.request")
    monkeypatch.setattr(request_log, "level", logging.INFO)
    monkeypatch.setattr(request_log, "_cache", {})
    handler = logs._InOrderHandler(stream)
    handler.setFormatter(JSONFormatter())
    warnings = logging.getLogger("test.in_order")
    monkeypatch.setattr(warnings, "handlers", [handler])
    monkeypatch.setattr(warnings, "propagate", False)

    def line(path: str) -> None:
        logs.request("get-user", "GET", path, 200, 0.1, context.RequestContext("r"))

    async def turns() -> list[list[str]]:
        line("/a")
        line("/b")
        assert stream.writes == []  # held until the turn ends
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        first = list(stream.writes)
        line("/c")
        warnings.warning("after c")
        line("/d")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return [first, stream.writes[len(first) :]]

    first, second = asyncio.run(turns())
    assert [[json.loads(x)["path"] for x in w.splitlines()] for w in first] == [["/a", "/b"]]
    messages = [
        [json.loads(x).get("path", json.loads(x)["message"]) for x in w.splitlines()]
        for w in second
    ]
    assert messages == [["/c"], ["after c"], ["/d"]]
