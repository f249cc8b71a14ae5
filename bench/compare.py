"""The warm cached path of this tree against another commit's, in the same run: for finding
which change moved a figure. `make bench` compares each run with the hello app only, so two of
its runs on different days also compare two machines (docs/performance.md, Analysis).

    python -m bench.compare c45c0e1                       # 5 rounds of 8 s at 1 and 50
    python -m bench.compare main --connections 50 --rounds 3

Both get-user processes run from this venv and share one Redis, PostgreSQL (migrated by this
tree), PgBouncer and emulator; REF's `services/` comes from `git archive`, so REF must run on
this tree's dependencies and schema. The hello app runs beside them. Each concurrency runs
`rounds` times per server, the order rotating; each round's req/s is divided by the hello app's
of the same round, and the median of those ratios is reported, with the server's CPU per
request (/proc) and the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from io import BytesIO
from pathlib import Path
from typing import Any

from userapi.domain.users import user_path

from bench.load import LoadResult, fire, median_of, paired_ratios, wrk, wrk_binary
from bench.stack import ROOT, Server, Stack, first_200, spawn_hello, with_cpu
from harness.processes import install_signal_cleanup

USERS = 200


def checkout_services(ref: str, into: Path) -> Path:
    """REF's `services/` under `into`, for PYTHONPATH."""
    archive = subprocess.run(
        ["git", "archive", ref, "services"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "services"


def entry_point(ref: str) -> list[str]:
    """REF's own `userapi` command, from its pyproject.toml: the installed script names this
    tree's entry module, which REF may not have (the package's layout moves)."""
    pyproject = subprocess.run(
        ["git", "show", f"{ref}:pyproject.toml"], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout  # fmt: skip
    target = tomllib.loads(pyproject)["project"]["scripts"]["userapi"]
    module, function = target.split(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    return [sys.executable, "-c", code]


async def compare(
    ref: str, connections: list[int], rounds: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    load_before = os.getloadavg()
    stack = Stack()
    servers: dict[str, Server] = {}
    try:
        users = stack.create_users(USERS, "compare")
        env = stack.env()
        servers["this tree"] = stack.spawn_userapi(env)
        servers[ref] = stack.spawn_userapi(
            env,
            command=entry_point(ref),
            PYTHONPATH=str(checkout_services(ref, workdir / "ref")),
        )
        servers["fastapi-hello"] = spawn_hello()
        paths = {name: [user_path(user) for user in users] for name in servers}
        paths["fastapi-hello"] = []
        for name, server in servers.items():
            first_200(server)
            if paths[name]:
                calls = [(server.base_url + path, server.headers) for path in paths[name]]
                if {o.status for o in await fire(calls, concurrency=4)} != {200}:
                    raise RuntimeError(f"caching the users failed for {name}")
        for name, server in servers.items():  # steady state, as the warm scenario has it
            await wrk(
                server.url, connections=100, seconds=2, headers=server.headers,
                paths=paths[name], workdir=workdir,
            )  # fmt: skip
        names = list(servers)
        levels = []
        for level in connections:
            runs: dict[str, list[LoadResult]] = {name: [] for name in names}
            cpu: dict[str, list[float]] = {name: [] for name in names}
            for round_ in range(rounds):
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    server = servers[name]
                    result, cpu_us = await with_cpu(server, wrk(
                        server.url, connections=level, seconds=seconds, headers=server.headers,
                        paths=paths[name], workdir=workdir,
                    ))  # fmt: skip
                    if result.errors:
                        raise RuntimeError(f"{name} had {result.errors} errors at {level}")
                    runs[name].append(result)
                    cpu[name].append(cpu_us)
            servers_row = {
                name: {
                    **paired_ratios(runs[name], runs["fastapi-hello"]),
                    "rps": median_of(runs[name]).rps,
                    "cpu_us_per_request": round(statistics.median(cpu[name])),
                }
                for name in names
            }
            levels.append({"connections": level, "servers": servers_row})
    finally:
        for server in servers.values():
            server.stop()
        stack.close()
    return {
        "ref": ref,
        "rounds": rounds,
        "seconds_per_run": seconds,
        "load_average": {"start": load_before, "end": os.getloadavg()},
        "levels": levels,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| Connections | Server | req/s x hello (rounds) | req/s | CPU µs/request |",
        "|---|---|---|---|---|",
    ]
    for level in result["levels"]:
        for name, row in level["servers"].items():
            rounds = ", ".join(f"{r:.2f}" for r in row["rps_ratio_rounds"])
            rows.append(
                f"| {level['connections']} | {name} | {row['rps_ratio']:.2f} ({rounds}) "
                f"| {row['rps']:.0f} | {row['cpu_us_per_request']} |"
            )
    start, end = result["load_average"]["start"], result["load_average"]["end"]
    rows.append("")
    rows.append(f"Load average (1, 5, 15 min): {start} at the start, {end} at the end.")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("ref", help="the commit to compare with (anything git archive takes)")
    parser.add_argument("--connections", default="1,50", help="comma-separated (default 1,50)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--output", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    wrk_binary()  # fail before starting anything
    install_signal_cleanup()
    with tempfile.TemporaryDirectory(prefix="userapi-compare-") as workdir:
        result = asyncio.run(
            compare(
                args.ref,
                [int(c) for c in args.connections.split(",")],
                args.rounds,
                args.seconds,
                Path(workdir),
            )
        )
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
