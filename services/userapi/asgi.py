"""An app factory for `uvicorn --factory userapi.asgi:create` (skaffold dev's --reload loop).

`userapi serve` remains the production entrypoint; this only reads USERAPI_ENDPOINT so that
uvicorn can rebuild the app after each file sync.
"""

from __future__ import annotations

import os

from fastapi import FastAPI


def create() -> FastAPI:
    from userapi import endpoints
    from userapi.runtime import logs
    from userapi.runtime.process import load_settings, require_auth0

    endpoint = os.environ.get("USERAPI_ENDPOINT", "get-user")
    settings = load_settings()
    require_auth0(settings)
    logs.configure(settings.log_level)
    return endpoints.build_app(endpoint, [endpoint], settings)
