"""The app factory each process of `userapi reload` (skaffold dev's image) builds after a
file sync: USERAPI_ENDPOINT's app. It also serves `uvicorn --factory
userapi.commands.asgi:create`.

`userapi serve` remains the production entrypoint.
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
