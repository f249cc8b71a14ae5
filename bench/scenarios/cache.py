"""Cache effect: cached against uncached reads with Auth0 at 500 ms and 150 ms per call, and the
hit ratio a Zipf-distributed user mix gets from a cold cache."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from userapi.domain.users import user_path
from userapi.emulator.app import ROUTE_GET_USER

from bench.config import Profile
from bench.load import fire, percentiles
from bench.stack import USER, Stack

PROFILE_KEY = "userapi:profile:v3:{}"  # + a user id without '%' or ':' (key_segment)
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
                cache.delete(PROFILE_KEY.format(USER))
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
