"""`make bench`: every measurement of docs/performance.md, on real Redis, PostgreSQL, PgBouncer
and the Auth0 emulator started here on free ports.

    python -m bench                      # the full run: writes docs/bench/ and docs/performance.md
    python -m bench --profile smoke --output /tmp/b     # every scenario, tiny and quick
    python -m bench --only coldstart,warm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.config import PROFILES, Profile
from bench.load import wrk_binary
from bench.scenarios import SCENARIOS
from bench.stack import ROOT, Stack
from harness.processes import install_signal_cleanup


async def run(profile: Profile, names: list[str], workdir: Path) -> dict[str, Any]:
    stack = Stack()
    results: dict[str, Any] = {}
    try:
        for name in names:
            started = time.monotonic()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            stack.flush_cache()
            stack.emulator.reset()
            results[name] = await SCENARIOS[name].run(stack, profile, workdir)
            print(f"bench: {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        stack.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument(
        "--output",
        type=Path,
        help="where results.json and performance.png go (default: docs/bench for a full run "
        "that updates the docs, else bench/results, which git ignores)",
    )
    parser.add_argument(
        "--no-docs", action="store_true", help="leave docs/performance.md's figures alone"
    )
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    profile = PROFILES[args.profile]
    updates_docs = profile.name == "full" and not args.only and not args.no_docs
    if args.output is None:
        args.output = ROOT / ("docs/bench" if updates_docs else "bench/results")
    wrk_binary()  # fail before starting anything
    install_signal_cleanup()
    with tempfile.TemporaryDirectory(prefix="userapi-bench-") as workdir:
        scenarios = asyncio.run(run(profile, names, Path(workdir)))
    results = {
        "profile": profile.name,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": report.machine(),
        "scenarios": scenarios,
        "targets": report.targets(scenarios),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report.plot(results, args.output / "performance.png")
    summary = report.markdown(results)
    print(summary)
    if updates_docs:
        report.update_docs(ROOT / "docs" / "performance.md", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
