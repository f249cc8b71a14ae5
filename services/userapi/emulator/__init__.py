"""An Auth0 emulator for development, tests and benchmarks (never imported by the runtime).

It follows Auth0's documented behaviour closely enough that userapi's production code cannot
tell the difference: OIDC discovery and JWKS (RS256 keys, rotation), /oauth/token (client
credentials and password grants), Management API v2 users with Auth0's error bodies, Lucene
search, paging limits, x-ratelimit-* headers and 429s.

Dev tooling, NOT part of Auth0: routes under /__emulator/ (see userapi.emulator.control) count
requests per route, add latency, inject faults (an HTTP status or a hang), rotate keys, change
the rate limit and mint or sign tokens. The same controls exist as Emulator methods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from userapi.emulator.app import (
    DEV_AUDIENCE,
    DEV_CLIENT_ID,
    DEV_CLIENT_SECRET,
    ROUTE_NAMES,
    Emulator,
    EmulatorConfig,
)
from userapi.emulator.limits import Fault

__all__ = [
    "DEV_AUDIENCE",
    "DEV_CLIENT_ID",
    "DEV_CLIENT_SECRET",
    "ROUTE_NAMES",
    "Emulator",
    "EmulatorConfig",
    "Fault",
    "default_seed_path",
    "load_seed",
    "run",
]


def default_seed_path() -> Path:
    return Path(__file__).with_name("seed_users.json")


def load_seed(path: str | Path) -> list[dict[str, Any]]:
    """Users from a JSON file holding an array of Auth0 user objects, or {"users": [...]}.

    Besides the profile, a seed user may carry `password` (enables the password grant) and
    `permissions` (the RBAC permissions put in its access tokens); neither is ever returned.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    users = data.get("users") if isinstance(data, dict) else data
    if not isinstance(users, list) or not all(
        isinstance(u, dict) and isinstance(u.get("user_id"), str) for u in users
    ):
        raise ValueError(f"{path}: expected a JSON array of users, each with a string user_id")
    return users


def run(
    host: str,
    port: int,
    *,
    seed_path: str | Path | None = None,
    latency_ms: float = 0.0,
    base_url: str | None = None,
) -> None:
    """Serve the emulator with uvicorn until interrupted (the `userapi emulator` command)."""
    import uvicorn

    config = EmulatorConfig(
        base_url=base_url or f"http://{host}:{port}",
        seed_users=load_seed(seed_path or default_seed_path()),
        latency_ms=latency_ms,
    )
    emulator = Emulator(config)
    print(f"Auth0 emulator on {config.base_url} ({len(emulator.users)} users)", flush=True)
    uvicorn.run(
        emulator.app,
        host=host,
        port=port,
        loop="auto",
        log_level="warning",
        # Hung requests (a "hang" fault) must not hold shutdown for long.
        timeout_graceful_shutdown=1,
    )
