"""`userapi reload`'s parent: what it imports before it forks (tests/integration/test_reload.py
runs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.imports import imported_after

_BASE = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
# The parent's way in: the console script's module, and the reloader.
ENTRY = {"userapi", "userapi.commands", "userapi.commands.cli", "userapi.commands.reload"}


def test_the_parent_imports_no_userapi_module_but_its_way_in() -> None:
    modules = imported_after(
        "import userapi.commands.cli; from userapi.commands import reload; reload.preload()"
    )
    assert {m for m in modules if m == "userapi" or m.startswith("userapi.")} == ENTRY
    assert {"fastapi", "pydantic", "redis.asyncio", "uvicorn.server"} <= modules


# Each endpoint's app built and started (lifespan) after the preload, as a child does, with the
# settings the dev profile gives a pod (Redis and PostgreSQL configured, never reached: creating
# the clients does no I/O).
_CHILDREN = """
import asyncio, json, os, sys
from userapi.commands import reload
reload.preload()
before = set(sys.modules)
from userapi.commands.asgi import create
from userapi.endpoints import ENDPOINTS
from userapi.platform.startup import load_settings, uvicorn_config
for name in ENDPOINTS:
    os.environ["USERAPI_ENDPOINT"] = name
    app = create()
    config = uvicorn_config(app, "127.0.0.1", 8080, load_settings())
    config.load()
    config.get_loop_factory()
    async def start_and_stop():
        async with app.router.lifespan_context(app):
            pass
    asyncio.run(start_and_stop())
new = set(sys.modules) - before
print(json.dumps(sorted(m for m in new if not m.startswith("userapi"))))
"""


def test_the_preload_covers_what_every_endpoint_imports() -> None:
    env = {
        "AUTH0_DOMAIN": "http://auth0-emulator:8765",
        "AUTH0_ALLOW_INSECURE_HTTP": "true",
        "AUTH0_AUDIENCE": "https://api",
        "AUTH0_CLIENT_ID": "id",
        "AUTH0_CLIENT_SECRET": "secret",
        "AUTH0_EVENTS_SECRET": "e" * 32,
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "DATABASE_URL": "postgresql://userapi@127.0.0.1:1/userapi",
        "DATABASE_PASSWORD": "password",
        "API_DOCS": "true",
        "LOG_LEVEL": "ERROR",
    }
    result = subprocess.run([sys.executable, "-c", _CHILDREN], capture_output=True, text=True,
                            timeout=120, check=True, env={**_BASE, **env})  # fmt: skip
    imported = json.loads(result.stdout)
    # Only the standard library's modules may still load in a child (sqlite3, for one).
    third_party = [m for m in imported if m.split(".")[0] not in sys.stdlib_module_names]
    assert third_party == []
