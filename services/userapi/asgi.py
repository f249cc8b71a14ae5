"""An app factory for `uvicorn --factory userapi.asgi:create` (skaffold dev's --reload loop).

`userapi serve` remains the production entrypoint; this serves USERAPI_ENDPOINT so that
uvicorn can rebuild the app after each file sync.
"""

from __future__ import annotations

from fastapi import FastAPI


def create() -> FastAPI:
    from userapi import endpoints
    from userapi.runtime.process import startup

    settings = startup()
    return endpoints.build_app(settings.userapi_endpoint, [settings.userapi_endpoint], settings)
