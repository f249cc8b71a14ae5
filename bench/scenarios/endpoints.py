"""list-users and update-user warm: each its own process under wrk, beside the FastAPI hello app
in the same run, as the warm scenario runs get-user.

- list-users: `GET /users?per_page=10&page=N` over the first pages, each an Auth0 search (the
  emulator) whose profiles are put in the cache. A page that did not change is already held,
  so it writes (and announces) nothing.
- update-user: `PATCH /users/{id}` of a random name over the warm scenario's number of users,
  each an Auth0 update, a cache write announced to every process, and a transaction (the
  account row, the audit record).

Both are bound by the emulator's answer, in Python on the same two cores: the ratios say what
the endpoint costs beside that, and catch a regression, not how fast Auth0 is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from userapi.domain.users import user_path

from bench.config import Profile
from bench.load import LoadResult, median_of, paired_ratios, wrk
from bench.scenario import Result, Scenario, Verdict, ratio_at_least
from bench.stack import USER, Server, Stack, cpu_seconds, first_200, spawn_hello

USERS = 50
PAGES = 5
ADMIN = ["read:users", "update:users"]
# Per request, a Lua expression: a new name each time, so that every PATCH changes the user.
PATCH_BODY = """'{"name":"bench ' .. math.random(1000000000) .. '"}'"""
# What each endpoint must keep, x the hello app at 50 connections. Set from this scenario's
# first runs (2026-12-07, docs/performance.md): main's code measured 0.01 (list-users) and
# 0.02 (update-user), this tree's 0.02-0.03 and 0.01-0.02, at load 8 to 12. Both wait on the
# emulator (a Python process on the same cores), so the bound guards against an endpoint
# that stops answering under load, not against a few percent.
GOALS = {"list-users": 0.01, "update-user": 0.01}


async def run(stack: Stack, profile: Profile, workdir: Path) -> dict[str, Any]:
    targets = stack.create_users(USERS, "endpoints")
    token = stack.emulator.token(USER, ADMIN)
    auth = {"Authorization": f"Bearer {token}"}
    servers = {
        name: stack.spawn_userapi(stack.env(), endpoint=name)
        for name in ("list-users", "update-user")
    }
    hello = spawn_hello()
    requests: dict[str, dict[str, Any]] = {
        "list-users": {"paths": [f"/users?per_page=10&page={page}" for page in range(PAGES)]},
        "update-user": {
            "paths": [user_path(user) for user in targets],
            "method": "PATCH",
            "body": PATCH_BODY,
        },
        hello.name: {"paths": []},
    }
    everyone: list[Server] = [*servers.values(), hello]
    rounds: dict[str, list[list[LoadResult]]] = {server.name: [] for server in everyone}
    cpu: dict[str, list[float]] = {server.name: [] for server in everyone}
    try:
        for server in everyone:
            first_200(server)
        for connections in _concurrency(profile):
            level: dict[str, list[LoadResult]] = {server.name: [] for server in everyone}
            used: dict[str, float] = dict.fromkeys(level, 0.0)
            for round_ in range(profile.warm_rounds):
                order = everyone[round_ % 3 :] + everyone[: round_ % 3]
                for server in order:
                    before = cpu_seconds(server.process.pid)
                    headers = {**auth, "Content-Type": "application/json"}
                    level[server.name].append(
                        await wrk(
                            server.base_url + ("/hello" if server is hello else ""),
                            connections=connections,
                            seconds=profile.warm_seconds,
                            headers=headers if server is not hello else None,
                            workdir=workdir,
                            **requests[server.name],
                        )
                    )
                    used[server.name] += cpu_seconds(server.process.pid) - before
            for name, results in level.items():
                rounds[name].append(results)
                served = sum(r.requests for r in results)
                cpu[name].append(round(used[name] / served * 1e6) if served else 0)
    finally:
        for server in everyone:
            server.stop()
    return {
        "load_generator": "wrk, 1 thread, keep-alive connections",
        "seconds_per_run": profile.warm_seconds,
        "rounds_per_run": profile.warm_rounds,
        "runs": {
            name: [median_of(results).as_dict() for results in levels]
            for name, levels in rounds.items()
        },
        "ratios": {
            name: [
                {"connections": mine[0].connections, **paired_ratios(mine, theirs)}
                for mine, theirs in zip(rounds[name], rounds[hello.name], strict=True)
            ]
            for name in servers
        },
        "cpu_us_per_request": cpu,
    }


def _concurrency(profile: Profile) -> tuple[int, ...]:
    return tuple(c for c in profile.warm_concurrency if c in (1, 50))


def judge(result: Result) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for name, goal in GOALS.items():
        at_50 = next((r for r in result["ratios"][name] if r["connections"] == 50), None)
        if at_50 is not None:
            verdicts.append(
                ratio_at_least(f"{name} warm at 50", goal, "FastAPI hello", at_50["rps_ratio"])
            )
        errors = sum(run["errors"] for run in result["runs"][name])
        verdicts.append(
            Verdict(target=f"{name} warm errors", goal="0", measured=errors, met=errors == 0)
        )
    return verdicts


def render(result: Result) -> list[str]:
    out = [
        "",
        f"**list-users and update-user**, warm, wrk {result['seconds_per_run']:g} s per run, "
        f"{result['rounds_per_run']} rounds per server and concurrency, rotating with the "
        "FastAPI hello app; medians, each round's ratio in brackets:",
        "",
        "| Endpoint | Connections | req/s | p50 | p99 | errors | x hello (req/s) | "
        "CPU µs/request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, ratios in result["ratios"].items():
        for run, ratio, cpu in zip(
            result["runs"][name], ratios, result["cpu_us_per_request"][name], strict=True
        ):
            rounds = ", ".join(f"{r:.2f}" for r in ratio["rps_ratio_rounds"])
            out.append(
                f"| {name} | {run['connections']} | {run['rps']:.0f} | {run['p50_ms']:.2f} ms | "
                f"{run['p99_ms']:.2f} ms | {run['errors']} | {ratio['rps_ratio']:.2f} ({rounds}) "
                f"| {cpu} |"
            )
    hello = result["runs"]["fastapi-hello"]
    out += [
        "",
        "The hello app in the same rounds: "
        + ", ".join(f"{run['rps']:.0f} req/s at {run['connections']}" for run in hello)
        + ".",
    ]
    return out


SCENARIO = Scenario("endpoints", run=run, render=render, judge=judge)
