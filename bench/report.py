"""Assembles the scenarios' verdicts, Markdown sections and plot panels (each scenario's own, in
bench/scenarios/) into results.json's targets, a Markdown summary (spliced into
docs/performance.md between markers, so the prose around it stays hand-written) and a plot."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.scenario import Result, Scenario, Verdict
from bench.scenarios import SCENARIOS

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


def targets(scenarios: dict[str, Result]) -> list[Verdict]:
    """What each scenario that ran is judged against, with its verdicts."""
    return [
        verdict for scenario, result in _measured(scenarios) for verdict in scenario.judge(result)
    ]


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def markdown(results: dict[str, Any]) -> str:
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
    for scenario, result in _measured(results["scenarios"]):
        out += scenario.render(result)
    return "\n".join(out)


def _measured(scenarios: dict[str, Result]) -> list[tuple[Scenario, Result]]:
    """The scenarios that ran, in SCENARIOS' order (not `--only`'s), with their results."""
    return [(s, scenarios[name]) for name, s in SCENARIOS.items() if name in scenarios]


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

    # Every panel is drawn, empty when its scenario did not run, so that `--only` keeps the layout.
    panels = [(name, s.plot) for name, s in SCENARIOS.items() if s.plot is not None]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2))
    for (name, draw), panel in zip(panels, axes, strict=True):
        if name in results["scenarios"]:
            draw(results["scenarios"][name], panel)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
