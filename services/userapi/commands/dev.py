"""`userapi dev`: every endpoint on one local port, with the same paths as production.

With nothing configured it is self-contained: the Auth0 emulator is served on the same port,
profiles are cached in process, and accounts live in an SQLite file. Set AUTH0_DOMAIN (and the
other AUTH0_* settings), REDIS_URL or DATABASE_URL to use the real thing instead.
"""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

from userapi import endpoints
from userapi.adapters.access_tokens import Permission
from userapi.adapters.database import create_database
from userapi.adapters.migrate import apply_migrations
from userapi.domain.accounts import Accounts
from userapi.domain.users import user_path
from userapi.platform.settings import Settings
from userapi.platform.startup import load_settings, run_uvicorn, startup


async def _prepare_database(settings: Settings, sample_user: str | None) -> None:
    database = create_database(settings)
    try:
        await apply_migrations(database)
        accounts = Accounts(database)
        if sample_user is not None and await accounts.get(sample_user) is None:
            # So the first curl shows both halves of a user: Auth0's profile and our row.
            await accounts.upsert(sample_user, plan="pro", preferences={"newsletter": True})
    finally:
        await database.close()


def run(host: str, port: int | None) -> None:
    configured = load_settings()
    port = configured.userapi_dev_port if port is None else port
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    base_url = f"http://{url_host}:{port}"
    mounts: list[tuple[str, Any]] = []
    overrides: dict[str, object] = {"api_docs": True}
    emulator = None
    if not configured.auth0_domain:
        from userapi.emulator import (
            DEV_AUDIENCE,
            DEV_CLIENT_ID,
            DEV_CLIENT_SECRET,
            Emulator,
            EmulatorConfig,
            default_seed_path,
            load_seed,
        )

        emulator = Emulator(
            EmulatorConfig(
                base_url=base_url,
                seed_users=load_seed(configured.emulator_seed or default_seed_path()),
                latency_ms=configured.emulator_latency_ms,
            )
        )
        # Mounted last: the endpoints' routes match first, the emulator takes the rest.
        mounts.append(("/", emulator.app))
        overrides |= {
            "auth0_domain": base_url,
            "auth0_allow_insecure_http": True,
            "auth0_audience": DEV_AUDIENCE,
            "auth0_client_id": DEV_CLIENT_ID,
            "auth0_client_secret": DEV_CLIENT_SECRET,
        }
    settings = startup(overrides)
    sample_user = next(iter(emulator.users)) if emulator is not None else None
    asyncio.run(_prepare_database(settings, sample_user))

    app = endpoints.build_app("dev", list(endpoints.ENDPOINTS), settings, mounts=mounts)
    _print_banner(base_url, settings, emulator)
    run_uvicorn(app, host, port, settings)


def _print_banner(base_url: str, settings: Settings, emulator: Any) -> None:
    database = "PostgreSQL" if settings.database_url else f"SQLite {settings.sqlite_path}"
    lines = [
        "",
        f"userapi dev: {', '.join(endpoints.ENDPOINTS)} on {base_url}",
        f"  Auth0:    {'emulator on the same port' if emulator else settings.auth0_base_url}",
        f"  cache:    {'Redis' if settings.redis_url else 'in-process'}",
        f"  database: {database}",
        f"  API docs: {base_url}/docs",
    ]
    if emulator is not None:
        user = next(iter(emulator.users.values()))
        url = base_url + user_path(user["user_id"])
        token = emulator.mint_access_token(
            user["user_id"], permissions=[Permission.READ_USERS], expires_in=86400
        )
        lines += [
            f"  sample user: {user['user_id']} ({user.get('email')})",
            f"  token (24 h, {Permission.READ_USERS}, sub={user['user_id']}):",
            f"    {token}",
            "",
            "Try:",
            f"  curl -s -H {shlex.quote('Authorization: Bearer ' + token)} {url}",
            "",
        ]
    print("\n".join(lines), flush=True)
