"""How big each measurement is: `full` for the figures in docs/performance.md, `smoke` to show
in CI that every scenario still runs (its figures mean nothing)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    cold_runs: int  # cold starts per server, interleaved
    warm_seconds: float  # per wrk run
    warm_concurrency: tuple[int, ...]
    warm_rounds: int  # runs per server and concurrency, alternating; the median is reported
    cached_samples: int
    uncached_samples: int
    auth0_latencies_ms: tuple[float, ...]
    zipf_users: int
    zipf_requests: int
    zipf_concurrency: int
    stampede_processes: int
    stampede_requests: int
    budget_processes: int
    budget_clients: int
    budget_seconds: float
    budget_server_connections: int  # per PgBouncer
    token_cold_starts: int
    auth0_budget_processes: int
    auth0_budget_misses: int
    scale_out_pods: int  # knative: get-user's pods under a step load of as many clients


FULL = Profile(
    name="full",
    cold_runs=9,
    warm_seconds=8,
    warm_concurrency=(1, 10, 50, 100),
    warm_rounds=3,
    cached_samples=400,
    uncached_samples=15,
    auth0_latencies_ms=(500, 150),
    zipf_users=1000,
    zipf_requests=3000,
    zipf_concurrency=16,
    stampede_processes=4,
    stampede_requests=500,
    budget_processes=8,
    budget_clients=400,
    budget_seconds=10,
    budget_server_connections=2,
    token_cold_starts=10,
    auth0_budget_processes=4,
    auth0_budget_misses=300,
    scale_out_pods=4,
)

SMOKE = Profile(
    name="smoke",
    cold_runs=2,
    warm_seconds=1,
    warm_concurrency=(1, 50),
    warm_rounds=2,
    cached_samples=20,
    uncached_samples=2,
    auth0_latencies_ms=(150,),
    zipf_users=40,
    zipf_requests=150,
    zipf_concurrency=8,
    stampede_processes=2,
    stampede_requests=60,
    budget_processes=2,
    budget_clients=40,
    budget_seconds=2,
    budget_server_connections=2,
    token_cold_starts=3,
    auth0_budget_processes=2,
    auth0_budget_misses=40,
    scale_out_pods=2,
)

PROFILES = {profile.name: profile for profile in (FULL, SMOKE)}
