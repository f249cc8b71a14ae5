"""One authenticated request, as the tests send them: an optional Bearer token beside any other
headers."""

from __future__ import annotations

from typing import Any

import httpx


def request(
    client: httpx.Client, method: str, path: str, token: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.request(method, path, headers=headers, **kwargs)
