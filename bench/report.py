"""Turns the scenarios' results into the targets' verdicts, a Markdown summary (spliced into
docs/performance.md between markers, so the prose around it stays hand-written) and a plot."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.scenario import Verdict
from bench.scenarios import (
    breakdown,
    budget,
    cache,
    coldstart,
    container,
    stampede,
    telemetry,
    tokens,
    warm,
)

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
_PACKAGES = ("fastapi", "starlette", "uvicorn", "pydantic", "httpx", "redis", "PyJWT", "asyncpg")


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": {name: metadata.version(name) for name in _PACKAGES},
        "servers": {
            "redis": _version(["redis-server", "--version"]),
            "postgres": _version(["psql", "--version"]),
            "pgbouncer": _version(["pgbouncer", "--version"], "/usr/sbin/pgbouncer"),
            "wrk": _version(["wrk", "--version"]),
        },
    }


def _version(command: list[str], fallback: str | None = None) -> str:
    for binary in (command[0], fallback):
        if binary is None:
            continue
        try:
            result = subprocess.run(
                [binary, *command[1:]], capture_output=True, text=True, timeout=10, check=False
            )
        except OSError:
            continue
        text = (result.stdout or result.stderr).strip()
        if text:
            return text.splitlines()[0]
    return "unknown"


def targets(scenarios: dict[str, Any]) -> list[Verdict]:
    rows: list[Verdict] = []

    def add(name: str, goal: str, measured: Any, met: bool | None) -> None:
        rows.append(Verdict(target=name, goal=goal, measured=measured, met=met))

    if "coldstart" in scenarios:
        rows += coldstart.judge(scenarios["coldstart"])
    if "warm" in scenarios:
        rows += warm.judge(scenarios["warm"])
    if "cache" in scenarios:
        rows += cache.judge(scenarios["cache"])
    if "stampede" in scenarios:
        rows += stampede.judge(scenarios["stampede"])
    if "budget" in scenarios:
        rows += budget.judge(scenarios["budget"])
    if "tokens" in scenarios:
        rows += tokens.judge(scenarios["tokens"])
    if "telemetry" in scenarios:
        rows += telemetry.judge(scenarios["telemetry"])
    if "container" in scenarios:
        rows += container.judge(scenarios["container"])
    return rows


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def markdown(results: dict[str, Any]) -> str:
    s = results["scenarios"]
    m = results["machine"]
    out = [
        f"Measured by `make bench` (profile `{results['profile']}`) on {results['finished']}: "
        f"{m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['servers']['redis']}, "
        f"{m['servers']['postgres']}, {m['servers']['pgbouncer']}, {m['servers']['wrk']}. "
        "Raw figures: [bench/results.json](bench/results.json).",
        "",
        "| Target | Goal | Measured | |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {t['target']} | {t['goal']} | {t['measured']} | {_mark(t['met'])} |"
        for t in results["targets"]
    ]
    out += ["", "![bench plot](bench/performance.png)"]
    if "coldstart" in s:
        out += coldstart.render(s["coldstart"])
    if "warm" in s:
        out += warm.render(s["warm"])
    if "breakdown" in s:
        out += breakdown.render(s["breakdown"])
    if "cache" in s:
        out += cache.render(s["cache"])
    if "stampede" in s:
        out += stampede.render(s["stampede"])
    if "budget" in s:
        out += budget.render(s["budget"])
    if "tokens" in s:
        out += tokens.render(s["tokens"])
    if "telemetry" in s:
        out += telemetry.render(s["telemetry"])
    if "container" in s:
        out += container.render(s["container"])
    return "\n".join(out)


def update_docs(path: Path, summary: str) -> None:
    text = path.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise RuntimeError(f"{path} has no {BEGIN} ... {END} section")
    path.write_text(pattern.sub(lambda _: f"{BEGIN}\n{summary}\n{END}", text))


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["scenarios"]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    if "coldstart" in s:
        coldstart.plot(s["coldstart"], axes[0])
    if "warm" in s:
        warm.plot(s["warm"], axes[1])
    if "cache" in s:
        cache.plot(s["cache"], axes[2])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
