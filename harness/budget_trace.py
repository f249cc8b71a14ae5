"""What the shared Auth0 budget decided, as Redis executed it: who queued, who got a token, in
what order, read from MONITOR while a test or the bench runs.

The budget's order ("a list call never takes a token while a single-user read is waiting")
is a claim about the interleaving of many processes' calls. Their own clocks and logs cannot
show it; Redis runs each script call whole and one at a time, and MONITOR lists those calls in
that order, each followed by the commands it ran (Redis 7). So this reads the decisions
themselves, independently of the script's bookkeeping:

- a `take` whose script ran `ZREM` on its own waiters' set got the token; one that ran `ZADD`
  was told to wait (it is registered, its lease the score);
- a waiter lives from its first registration to its last call (its grant, its `leave`, or, for
  a caller that gave up without leaving, its last poll).

A grant to a lower priority while a higher-priority waiter lives is an overtake. A grant with
no such waiter alive while higher-priority callers of the run had yet to reach the budget is
not one: those callers were still on their way (accepted, authenticated, looked up) and no
limiter can wait for a caller that has not asked.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

import redis

_END = "budget-trace-end"
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
_BUDGET_KEY = re.compile(r"auth0:budget:.*:waiting:(\d)$")


@dataclass
class Waiter:
    """One `acquire`: every call of one waiter id, in Redis's order (indexes into the trace)."""

    id: str
    priority: int
    first: int
    first_at: float  # Redis's clock, seconds
    last: int = 0
    last_at: float = 0.0
    queued: int | None = None  # the first registration
    granted: int | None = None
    granted_at: float | None = None
    # (trace index, lease end in Redis ms) of each registration
    leases: list[tuple[int, int]] = field(default_factory=list)
    lapses_ms: list[float] = field(default_factory=list)  # a later call after its lease ended


@dataclass(frozen=True)
class Grant:
    waiter: str
    priority: int
    at: float  # Redis's clock, seconds
    # "overtake": a higher-priority waiter was alive; "ahead_of_arrivals": none was, but some
    # higher-priority caller of the run reached the budget later; "in_order": neither.
    kind: str
    overtaken: tuple[str, ...] = ()  # the live higher-priority waiters it went ahead of


@dataclass(frozen=True)
class Analysis:
    waiters: dict[str, Waiter]
    grants: list[Grant]

    def of(self, priority: int) -> list[Waiter]:
        return [w for w in self.waiters.values() if w.priority == priority]

    def granted(self, priority: int, kind: str | None = None) -> list[Grant]:
        return [
            g for g in self.grants if g.priority == priority and (kind is None or g.kind == kind)
        ]

    def queued_behind_higher(self, priority: int) -> list[Waiter]:
        """Callers of `priority` that first asked while a higher-priority waiter was alive:
        the ones the order was tested on."""
        higher = [w for w in self.waiters.values() if w.priority < priority]
        return [
            w
            for w in self.of(priority)
            if any(h.queued is not None and h.queued < w.first < h.last for h in higher)
        ]

    def lapses(self, priority: int | None = None) -> list[float]:
        return [
            ms
            for w in self.waiters.values()
            if priority is None or w.priority == priority
            for ms in w.lapses_ms
        ]

    def summary(self, priority: int) -> dict[str, Any]:
        """The grants to `priority` by kind, and the registrations of every priority that
        lapsed (their owner's next call came after the lease ended)."""
        lapses = self.lapses()
        return {
            "callers": len(self.of(priority)),
            "queued_behind_higher": len(self.queued_behind_higher(priority)),
            "granted": len(self.granted(priority)),
            "overtakes": len(self.granted(priority, "overtake")),
            "ahead_of_arrivals": len(self.granted(priority, "ahead_of_arrivals")),
            "in_order": len(self.granted(priority, "in_order")),
            "lapsed_leases": len(lapses),
            "worst_lapse_ms": round(max(lapses), 1) if lapses else 0.0,
        }


class BudgetTrace:
    """MONITOR on `url` from `start()` to `stop()`, in a thread; `analyse()` after."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lines: list[str] = []  # as MONITOR sent them: parsed after, not while it runs
        self._seen = 0  # lines `arrivals` has looked at
        self._arrived: dict[int, set[str]] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> BudgetTrace:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="budget-trace", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("MONITOR did not start")

    def stop(self) -> None:
        if self._thread is None:
            return
        with redis.Redis.from_url(self._url) as client:
            client.echo(_END)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("MONITOR did not end")
        self._thread = None
        if self._error is not None:
            raise self._error

    def arrivals(self, priority: int) -> int:
        """Distinct callers of `priority` that have reached the budget so far (while running)."""
        lines = self._lines[self._seen :]
        self._seen += len(lines)
        for line in lines:
            if '"EVALSHA"' in line:
                _, client, args = _parse(line)
                if client != "lua" and len(args) >= 13 and args[7] == "take":
                    self._arrived.setdefault(int(args[10]), set()).add(args[11])
        return len(self._arrived.get(priority, ()))

    def _listen(self) -> None:
        try:
            with redis.Redis.from_url(self._url) as client, client.monitor() as monitor:
                self._ready.set()
                while True:
                    raw = monitor.connection.read_response()
                    text = raw.decode() if isinstance(raw, bytes) else str(raw)
                    if _END in text:
                        return
                    self._lines.append(text)
        except BaseException as exc:  # re-raised by stop()
            self._error = exc
            self._ready.set()

    def analyse(self) -> Analysis:
        return analyse([_parse(line) for line in self._lines])


def _parse(text: str) -> tuple[float, str, list[str]]:
    # 1700000000.123456 [0 127.0.0.1:5555] "EVALSHA" "…" …   or   … [0 lua] "ZADD" …
    stamp, _, rest = text.partition(" ")
    client = rest[rest.index(" ") + 1 : rest.index("]")]
    args = [m.group(1).encode().decode("unicode_escape") for m in _ARG.finditer(rest)]
    return float(stamp), client, args


def analyse(lines: list[tuple[float, str, list[str]]]) -> Analysis:
    waiters: dict[str, Waiter] = {}
    grants: list[tuple[int, Waiter]] = []
    current: Waiter | None = None  # the budget call whose script's commands follow
    for index, (at, client, args) in enumerate(lines):
        if client != "lua":
            current = None
            # EVALSHA sha 4 bucket w0 w1 w2 op rate burst priority waiter [hold patient]
            if len(args) >= 12 and args[0].upper() == "EVALSHA" and args[2] == "4":
                op, priority, waiter_id = args[7], int(args[10]), args[11]
                if op not in ("take", "leave") or not waiter_id:
                    continue  # a hold, or a caller that would not wait: it queues nobody
                waiter = waiters.get(waiter_id)
                if waiter is None:
                    waiter = waiters[waiter_id] = Waiter(waiter_id, priority, index, at)
                # Registered by its previous call, and back only after that lease ended.
                for lease_index, lease_end in waiter.leases[-1:]:
                    if lease_index > waiter.last and at * 1000 > lease_end:
                        waiter.lapses_ms.append(at * 1000 - lease_end)
                waiter.last, waiter.last_at = index, at
                current = waiter if op == "take" else None
            continue
        if current is None or len(args) < 2:
            continue
        own = _BUDGET_KEY.search(args[1])
        if own is None or int(own.group(1)) != current.priority:
            continue  # the script counting the waiters ahead of it
        command = args[0].upper()
        if command == "ZADD" and len(args) >= 4 and args[3] == current.id:
            if current.queued is None:
                current.queued = index
            current.leases.append((index, int(float(args[2]))))
        elif command == "ZREM" and len(args) >= 3 and args[2] == current.id:
            current.granted, current.granted_at = index, at
            grants.append((index, current))
    return Analysis(waiters, [_judge(index, w, waiters) for index, w in grants])


def _judge(index: int, waiter: Waiter, waiters: dict[str, Waiter]) -> Grant:
    assert waiter.granted_at is not None
    higher = [w for w in waiters.values() if w.priority < waiter.priority]
    alive = tuple(w.id for w in higher if w.queued is not None and w.queued < index < w.last)
    if alive:
        return Grant(waiter.id, waiter.priority, waiter.granted_at, "overtake", alive)
    if any(w.first > index for w in higher):
        return Grant(waiter.id, waiter.priority, waiter.granted_at, "ahead_of_arrivals")
    return Grant(waiter.id, waiter.priority, waiter.granted_at, "in_order")
