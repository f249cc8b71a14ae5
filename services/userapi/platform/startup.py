"""Process start-up: one way for every command to read its settings and begin logging, then
uvicorn for the ones that serve."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from userapi.platform.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    import uvicorn


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and `overrides`); a SystemExit naming every problem."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}"
            for e in exc.errors()
        )
        raise SystemExit(f"userapi: configuration error: {problems}") from None


def startup(
    overrides: Mapping[str, object] | None = None,
    *,
    serving: bool = True,
    management_api: bool = True,
) -> Settings:
    """What `userapi serve`, `userapi dev`, `userapi migrate` and the skaffold factory do first:
    the settings, the Auth0 ones the endpoints need when `serving` (the client secret only when
    one calls the `management_api`), then JSON logging."""
    from userapi.platform import logs

    settings = load_settings(**(overrides or {}))
    if serving:
        try:
            settings.require_auth0(management_api=management_api)
        except ConfigurationError as exc:
            raise SystemExit(f"userapi: configuration error: {exc}") from None
    logs.configure(settings.log_level)
    return settings


def uvicorn_config(app: object, host: str, port: int, settings: Settings) -> uvicorn.Config:
    """How every command serves: `userapi serve` and `userapi dev` through run_uvicorn, each
    child of `userapi reload` on the socket its parent bound."""
    import uvicorn

    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        lifespan="on",
        log_config=None,  # logs.configure() already set JSON logging
        access_log=False,  # replaced by the request log line
        server_header=False,
        # No endpoint speaks WebSocket: "auto" imported the websockets package at every start.
        ws="none",
        # SIGTERM: stop accepting, let in-flight requests finish for this long, then close.
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
    )


def run_uvicorn(app: object, host: str, port: int, settings: Settings) -> None:
    import uvicorn

    uvicorn.Server(uvicorn_config(app, host, port, settings)).run()
