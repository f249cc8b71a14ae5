"""Token sharing: a burst of cold starts, each of whose first request needs the Management API
(its user is in no cache), with the management token shared through Redis and without Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from userapi.domain.users import user_path
from userapi.emulator.app import ROUTE_OAUTH

from bench.config import Profile
from bench.load import fire
from bench.scenario import Result, Scenario, Verdict
from bench.stack import Stack


async def run(stack: Stack, profile: Profile, _workdir: Path) -> dict[str, Any]:
    return {
        "cold_starts": profile.token_cold_starts,
        "shared_through_redis": await _burst(stack, profile, redis=True),
        "without_redis": await _burst(stack, profile, redis=False),
    }


async def _burst(stack: Stack, profile: Profile, *, redis: bool) -> dict[str, Any]:
    users = stack.create_users(profile.token_cold_starts, f"tokens-{redis}")
    stack.flush_cache()  # no token and no profile anywhere: every pod starts from nothing
    env = stack.env(redis=redis)
    servers = [stack.spawn_userapi(env, user) for user in users]
    try:
        for server in servers:
            server.process.wait_healthy(server.base_url + "/healthz", timeout=60)
        before = stack.emulator.calls(ROUTE_OAUTH)
        # All first requests at once: pods scaled up together take their first traffic together.
        outcomes = await fire(
            [(server.base_url + user_path(user), server.headers) for server, user in
             zip(servers, users, strict=True)],
            concurrency=len(servers),
        )  # fmt: skip
        calls = stack.emulator.calls(ROUTE_OAUTH) - before
    finally:
        for server in servers:
            server.stop()
    return {
        "token_requests": calls,
        "statuses": sorted(o.status for o in outcomes),
    }


def judge(t: Result) -> list[Verdict]:
    calls = t["shared_through_redis"]["token_requests"]
    return [
        Verdict(
            target=f"token sharing ({t['cold_starts']} cold starts)",
            goal="1 /oauth/token",
            measured=calls,
            met=calls == 1,
        )
    ]


def render(t: Result) -> list[str]:
    return [
        "",
        f"**Token sharing**: {t['cold_starts']} simultaneous cold starts, each first request "
        f"needing the Management API: {t['shared_through_redis']['token_requests']} "
        f"`/oauth/token` call(s) with the token shared through Redis, "
        f"{t['without_redis']['token_requests']} without Redis.",
    ]


SCENARIO = Scenario("tokens", run=run, render=render, judge=judge)
