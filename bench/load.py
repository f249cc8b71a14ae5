"""Load generators: wrk for throughput (a C event loop: it never is the bottleneck of a Python
server), and a minimal asyncio HTTP/1.1 client for the scenarios that need per-request control
(a Zipf user mix, a burst of first reads)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# wrk reports through this Lua hook; its own text summary rounds and changes units.
_WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  io.flush()
end
"""


@dataclass(frozen=True)
class LoadResult:
    connections: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors, timeouts and non-2xx/3xx answers

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_of(results: Sequence[LoadResult]) -> LoadResult:
    """Repeated runs at one concurrency as one: the median of each rate and percentile, the
    worst maximum, and every request and error counted."""
    if not results or len({r.connections for r in results}) != 1:
        raise ValueError("median_of needs runs at one concurrency")

    def median(field: str) -> float:
        values: list[float] = [getattr(r, field) for r in results]
        return round(statistics.median(values), 3)

    return LoadResult(
        connections=results[0].connections,
        requests=sum(r.requests for r in results),
        seconds=round(sum(r.seconds for r in results), 3),
        rps=median("rps"),
        p50_ms=median("p50_ms"),
        p90_ms=median("p90_ms"),
        p99_ms=median("p99_ms"),
        max_ms=max(r.max_ms for r in results),
        errors=sum(r.errors for r in results),
    )


def paired_ratios(ours: Sequence[LoadResult], theirs: Sequence[LoadResult]) -> dict[str, Any]:
    """Each round's run against the other server's run of the same round, and the median of
    those ratios: a stall of the shared machine moves both runs of one round, and one round of
    several at most."""
    pairs = list(zip(ours, theirs, strict=True))
    rps = [mine.rps / other.rps for mine, other in pairs if other.rps]
    p50 = [mine.p50_ms / other.p50_ms for mine, other in pairs if other.p50_ms]
    p99 = [mine.p99_ms / other.p99_ms for mine, other in pairs if other.p99_ms]
    return {
        "rps_ratio": round(statistics.median(rps), 3) if rps else None,
        "p50_ratio": round(statistics.median(p50), 3) if p50 else None,
        "p99_ratio": round(statistics.median(p99), 3) if p99 else None,
        "rps_ratio_rounds": [round(ratio, 3) for ratio in rps],
        "p50_ratio_rounds": [round(ratio, 3) for ratio in p50],
        "p99_ratio_rounds": [round(ratio, 3) for ratio in p99],
    }


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise FileNotFoundError("wrk not found: apt-get install wrk")
    return path


def _script(workdir: Path, paths: Sequence[str], method: str = "GET", body: str = "") -> Path:
    """The report hook, and with `paths` a request hook that picks one at random each time.
    `body` is a Lua expression, evaluated per request (a PATCH's JSON, varied each time)."""
    text = _WRK_REPORT
    if paths:
        quoted = ", ".join(json.dumps(p) for p in paths)  # JSON strings are Lua strings here
        arguments = f'"{method}", paths[math.random(#paths)], nil'
        if body:
            arguments += f", {body}"
        text += (
            f"local paths = {{{quoted}}}\nrequest = function() return wrk.format({arguments}) end\n"
        )
    # Named by content and never rewritten: a wrk started earlier may be reading it right now.
    path = workdir / f"wrk-{hashlib.sha256(text.encode()).hexdigest()[:16]}.lua"
    if not path.exists():
        path.write_text(text)
    return path


def parse_wrk(output: str, connections: int) -> LoadResult:
    line = next(
        (line for line in reversed(output.splitlines()) if line.startswith("{")),
        None,
    )
    if line is None:
        raise RuntimeError(f"wrk printed no report:\n{output}")
    raw = json.loads(line)
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadResult(
        connections=connections,
        requests=raw["requests"],
        seconds=round(seconds, 3),
        rps=round(raw["requests"] / seconds, 1) if seconds else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=errors,
    )


async def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    paths: Sequence[str] = (),
    workdir: Path,
    method: str = "GET",
    body: str = "",
    prefix: Sequence[str] = (),
) -> LoadResult:
    """One wrk thread: on two cores the server under test needs the other one. With `paths`,
    each request goes to one of them at random (on `url`'s host). `prefix` runs it through
    another command (`ip netns exec NAME`: from inside a network namespace)."""
    args = [*prefix, wrk_binary(), "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"]
    args += ["-s", str(_script(workdir, paths, method, body))]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    process = await asyncio.create_subprocess_exec(
        *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{text}")
    return parse_wrk(text, connections)


@dataclass(frozen=True)
class Outcome:
    status: int  # 0: no HTTP answer
    ms: float


class _Connection:
    """One keep-alive HTTP/1.1 connection, just enough protocol for these GETs. httpx, at 500
    concurrent requests, spent seconds of CPU on its own pool: the client was the bottleneck."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def get(self, target: str, host: str, headers: dict[str, str]) -> tuple[int, bool]:
        """(status, whether the server keeps the connection open)."""
        head = [f"GET {target} HTTP/1.1", f"Host: {host}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed before answering")
        status = int(status_line.split()[1])
        length, keep_alive = 0, True
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value == "close":
                keep_alive = False
            elif name == "transfer-encoding":
                raise ValueError("chunked answers are not expected here")
        if length:
            await self.reader.readexactly(length)
        return status, keep_alive

    def close(self) -> None:
        self.writer.close()


async def fire(
    requests: Sequence[tuple[str, dict[str, str]]], *, concurrency: int, request_timeout: float = 30
) -> list[Outcome]:
    """GET each (url, headers) with at most `concurrency` in flight, each worker on its own
    keep-alive connection; outcomes in request order."""
    outcomes: list[Outcome | None] = [None] * len(requests)
    queue = iter(enumerate(requests))

    async def worker() -> None:
        connections: dict[tuple[str, int], _Connection] = {}
        try:
            for index, (url, headers) in queue:
                parts = urlsplit(url)
                host, port = parts.hostname or "127.0.0.1", parts.port or 80
                target = parts.path + (f"?{parts.query}" if parts.query else "")
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(request_timeout):
                        connection = connections.get((host, port))
                        if connection is None:
                            connection = await _Connection.open(host, port)
                            connections[(host, port)] = connection
                        status, keep_alive = await connection.get(target, parts.netloc, headers)
                except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
                    status, keep_alive = 0, False
                outcomes[index] = Outcome(status, (time.perf_counter() - started) * 1000)
                if not keep_alive and (host, port) in connections:
                    connections.pop((host, port)).close()
        finally:
            for connection in connections.values():
                connection.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(requests)))))
    return [outcome for outcome in outcomes if outcome is not None]


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    """p50/p99/max of a sample, with its size: a p99 of 20 samples is its maximum."""
    ordered = sorted(values_ms)
    if not ordered:
        return {"n": 0}
    cut = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else None
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(cut[98] if cut else ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
    }
