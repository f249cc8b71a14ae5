"""What a bench scenario is: its run, its targets and its part of the report, in one module under
bench/scenarios/ (issue 21), so that report.py only assembles them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from bench.config import Profile
from bench.stack import Stack

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# A scenario's figures as results.json holds them: JSON-ready.
Result = dict[str, Any]


class Verdict(TypedDict):
    """One target of issue #5 with its measured value; `met` is None when not measured."""

    target: str
    goal: str
    measured: Any
    met: bool | None


def _no_targets(_: Result) -> list[Verdict]:
    return []


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Stack, Profile, Path], Awaitable[Result]]
    # Markdown lines for docs/performance.md, starting with a blank line that separates them
    # from the section before.
    render: Callable[[Result], list[str]]
    judge: Callable[[Result], list[Verdict]] = _no_targets
    # A panel of bench/performance.png; report.py gives each scenario that has one its own axes.
    plot: Callable[[Result, Axes], None] | None = None


# Most targets bound a ratio to a yardstick: the goal is written from the limit it is judged by.
def ratio_at_most(target: str, limit: float, yardstick: str, ratio: float) -> Verdict:
    goal = f"<= {limit:g} x {yardstick}"
    return Verdict(target=target, goal=goal, measured=f"{ratio:.2f} x", met=ratio <= limit)


def ratio_at_least(target: str, limit: float, yardstick: str, ratio: float) -> Verdict:
    goal = f">= {limit:g} x {yardstick}"
    return Verdict(target=target, goal=goal, measured=f"{ratio:.2f} x", met=ratio >= limit)
