"""An app factory for `uvicorn --factory userapi.commands.asgi:create` (skaffold dev's
--reload loop).

`userapi serve` remains the production entrypoint; this serves USERAPI_ENDPOINT so that
uvicorn can rebuild the app after each file sync.
"""

from __future__ import annotations

from fastapi import FastAPI


def create() -> FastAPI:
    from userapi import endpoints
    from userapi.platform.startup import load_settings, startup

    settings = load_settings()
    name = settings.userapi_endpoint
    settings = startup(management_api=endpoints.load(name).management_api)
    return endpoints.build_app(name, [name], settings)
