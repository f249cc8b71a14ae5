"""An Auth0 emulator for development, tests and benchmarks (never imported by the runtime).

It follows Auth0's documented behaviour closely enough that userapi's production code cannot
tell the difference: discovery and JWKS, /oauth/token (client credentials and password grants),
Management API v2 users with Auth0's errors, rate-limit headers and 429s. Under /__emulator/ it
adds controls that Auth0 does not have: request counters, latency, fault injection, key
rotation and minting tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from userapi.emulator.app import Emulator, EmulatorConfig
from userapi.emulator.limits import Fault

__all__ = ["Emulator", "EmulatorConfig", "Fault", "default_seed_path", "load_seed", "run"]


def default_seed_path() -> Path:
    return Path(__file__).with_name("seed_users.json")


def load_seed(path: str | Path) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    users = data.get("users") if isinstance(data, dict) else data
    if not isinstance(users, list) or not all(
        isinstance(u, dict) and "user_id" in u for u in users
    ):
        raise ValueError(f"{path}: expected a JSON array of users, each with a user_id")
    return users


def run(
    host: str,
    port: int,
    *,
    seed_path: str | None = None,
    latency_ms: float = 0.0,
    base_url: str | None = None,
) -> None:
    import uvicorn

    config = EmulatorConfig(
        base_url=base_url or f"http://{host}:{port}",
        seed_users=load_seed(seed_path or default_seed_path()),
        latency_ms=latency_ms,
    )
    emulator = Emulator(config)
    print(f"Auth0 emulator on {config.base_url} ({len(emulator.users)} users)", flush=True)
    uvicorn.run(
        emulator.app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1
    )
