"""The process's one httpx client for Auth0, created when first needed.

A cold pod that finds the JWKS, the management token and the profile in Redis never calls Auth0
before its first answer, so it need not pay for importing httpx either (about 40 ms of a cold
start, docs/performance.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from userapi import __version__

if TYPE_CHECKING:
    import httpx

    from userapi.platform.settings import Settings


class LazyHTTP:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            settings = self._settings
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    settings.auth0_read_timeout_seconds,
                    connect=settings.auth0_connect_timeout_seconds,
                ),
                limits=httpx.Limits(
                    max_connections=settings.auth0_max_connections,
                    max_keepalive_connections=settings.auth0_max_connections,
                    keepalive_expiry=60.0,
                ),
                headers={"User-Agent": f"userapi/{__version__}"},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
