"""Cache effect: cached against uncached reads with Auth0 at 500 ms and 150 ms per call, and the
hit ratio a Zipf-distributed user mix gets from a cold cache."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from userapi.domain.users import user_path
from userapi.emulator.app import ROUTE_GET_USER

from bench.config import Profile
from bench.load import fire, percentiles
from bench.scenario import Result, Scenario, Verdict
from bench.stack import USER, Stack

if TYPE_CHECKING:
    from matplotlib.axes import Axes

PROFILE_KEY = "userapi:profile:v3:{}"  # + a user id without '%' or ':' (key_segment)
INVALIDATE_CHANNEL = "userapi:invalidate"  # RedisStore.channel, for the default prefix
ZIPF_EXPONENT = 1.1  # web object popularity is typically Zipf with s near 1
ZIPF_LATENCY_MS = 150.0


async def run(stack: Stack, profile: Profile, _workdir: Path) -> dict[str, Any]:
    users = stack.create_users(profile.zipf_users, "zipf")
    server = stack.userapi(stack.env())
    url = server.base_url + user_path(USER)
    cache = stack.redis_client()
    try:
        by_latency = {}
        for latency in profile.auth0_latencies_ms:
            stack.emulator.latency(latency)
            cached = await fire([(url, server.headers)] * profile.cached_samples, concurrency=1)
            uncached = []
            for _ in range(profile.uncached_samples):
                # As every writer does: deleted, and announced to the process's own copy.
                key = PROFILE_KEY.format(USER)
                pipeline = cache.pipeline()
                pipeline.delete(key)
                pipeline.publish(INVALIDATE_CHANNEL, key)
                pipeline.execute()
                await asyncio.sleep(0.01)  # delivered (within a millisecond), not timed
                uncached += await fire([(url, server.headers)], concurrency=1)
            _all_ok(cached + uncached)
            cached_stats = percentiles([o.ms for o in cached])
            uncached_stats = percentiles([o.ms for o in uncached])
            by_latency[f"{latency:g}"] = {
                "cached": cached_stats,
                "uncached": uncached_stats,
                "speedup_p50": round(uncached_stats["p50_ms"] / cached_stats["p50_ms"], 1),
            }
        zipf = await _zipf(stack, server.base_url, server.headers, users, profile)
    finally:
        stack.emulator.latency(0)
        cache.close()
        server.stop()
    return {"sequential_reads": by_latency, "zipf": zipf}


async def _zipf(
    stack: Stack, base_url: str, headers: dict[str, str], users: list[str], profile: Profile
) -> dict[str, Any]:
    weights = [1 / rank**ZIPF_EXPONENT for rank in range(1, len(users) + 1)]
    mix = random.Random(5).choices(users, weights, k=profile.zipf_requests)
    stack.emulator.latency(ZIPF_LATENCY_MS)
    fetched_before = stack.emulator.calls(ROUTE_GET_USER)
    started = time.perf_counter()
    outcomes = await fire(
        [(base_url + user_path(user), headers) for user in mix],
        concurrency=profile.zipf_concurrency,
    )
    elapsed = time.perf_counter() - started
    _all_ok(outcomes)
    fetched = stack.emulator.calls(ROUTE_GET_USER) - fetched_before
    distinct = len(set(mix))
    return {
        "users": len(users),
        "exponent": ZIPF_EXPONENT,
        "requests": len(mix),
        "concurrency": profile.zipf_concurrency,
        "auth0_latency_ms": ZIPF_LATENCY_MS,
        "distinct_users_requested": distinct,
        "auth0_fetches": fetched,
        "hit_ratio": round(1 - fetched / len(mix), 4),
        # A cold cache must miss each user once: the best any cache can do on this mix.
        "best_possible_hit_ratio": round(1 - distinct / len(mix), 4),
        "latency": percentiles([o.ms for o in outcomes]),
        "requests_per_second": round(len(mix) / elapsed, 1),
    }


def _all_ok(outcomes: list[Any]) -> None:
    failed = [o.status for o in outcomes if o.status != 200]
    if failed:
        raise RuntimeError(f"{len(failed)} reads failed: statuses {sorted(set(failed))}")


def judge(cache: Result) -> list[Verdict]:
    if "500" not in cache["sequential_reads"]:
        return []
    speedup = cache["sequential_reads"]["500"]["speedup_p50"]
    return [
        Verdict(
            target="cached vs uncached (500 ms)",
            goal=">= 100 x faster p50",
            measured=f"{speedup:g} x",
            met=speedup >= 100,
        )
    ]


def render(cache: Result) -> list[str]:
    out = [
        "",
        "**Cache effect**, sequential reads of one user:",
        "",
        "| Auth0 latency | cached p50 | cached p99 | uncached p50 | uncached p99 | p50 speedup |",
        "|---|---|---|---|---|---|",
    ]
    for latency, row in cache["sequential_reads"].items():
        c, u = row["cached"], row["uncached"]
        out.append(
            f"| {latency} ms | {c['p50_ms']:.2f} ms (n={c['n']}) | {c['p99_ms']:.2f} ms | "
            f"{u['p50_ms']:.0f} ms (n={u['n']}) | {u['p99_ms']:.0f} ms | "
            f"{row['speedup_p50']:g} x |"
        )
    z = cache["zipf"]
    out += [
        "",
        f"Zipf mix (s={z['exponent']}, {z['users']} users, {z['requests']} requests, "
        f"{z['concurrency']} concurrent, Auth0 at {z['auth0_latency_ms']:g} ms, cold cache): "
        f"hit ratio {z['hit_ratio']:.3f} against a best possible "
        f"{z['best_possible_hit_ratio']:.3f} ({z['auth0_fetches']} Auth0 fetches for "
        f"{z['distinct_users_requested']} distinct users); "
        f"p50 {z['latency']['p50_ms']:.1f} ms, p99 {z['latency']['p99_ms']:.0f} ms.",
    ]
    return out


def plot(cache: Result, axes: Axes) -> None:
    reads = cache["sequential_reads"]
    labels, values = [], []
    for latency, row in reads.items():
        labels += [f"hit\n({latency} ms)", f"miss\n({latency} ms)"]
        values += [row["cached"]["p50_ms"], row["uncached"]["p50_ms"]]
    axes.bar(labels, values, color=["C0", "C3"] * len(reads))
    axes.set_yscale("log")
    axes.set_title("GET /users/{id} p50, hit vs miss (Auth0 latency)")
    axes.set_ylabel("ms (log)")


SCENARIO = Scenario("cache", run=run, render=render, judge=judge, plot=plot)
