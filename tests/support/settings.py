"""Settings for tests that build components in process: a tenant that is never called, no
Redis, no TTL jitter (so expiries are exact), and whatever a test overrides."""

from __future__ import annotations

from typing import Any

from userapi.platform.settings import Settings


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth0_domain": "example.us.auth0.com",
        "auth0_audience": "https://api",
        "auth0_client_id": "id",
        "auth0_client_secret": "secret",
        "redis_url": None,
        "profile_ttl_jitter": 0.0,
    }
    return Settings(**{**values, **overrides})
